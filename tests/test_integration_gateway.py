"""
Integration tests of the filter chain (issue 5): real listeners on
127.0.0.1 port 0, in-process origins (L{tests.helpers.Origin}), byte-exact
raw clients, and for the shared rate limit a real C{redis-server}.

The gateway: a reverse listener whose own filters (C{ip_block}, C{acl},
C{rate_limit}) run before the filters of its routes::

    /api/    jwt (HS256; sub -> X-User), headers (X-Request-Id both ways,
             X-Gateway, no Server)
    /admin/  basic_auth (a bcrypt htpasswd made by the test)
    /v1/     transform (twisted_proxy.examples.transforms, max_body 64)
    /        no filters of its own

Also: basic_auth on a forward listener, custom filters named by dotted path
(L{SlowFilter}, L{BrokenResponseFilter}), two proxies sharing a rate limit
in Redis, and filters of a tcp listener (an acl, asynchronous verdicts).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from typing import Any, Dict, Generator, List, Optional

import bcrypt
import jwt
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from tests.helpers import (
    REDIS_SERVER,
    Harness,
    OriginProtocol,
    OriginRequest,
    RawClient,
    RedisServer,
    Response,
    RunningProxy,
    reverse_config,
    servers,
    unused_port,
)
from twisted_proxy.filters import Deny, RequestInfo
from twisted_proxy.interfaces import IRequestFilter, IResponseFilter

Gen = Generator[Deferred, Any, Any]

#: the HS256 secret of the gateway's jwt filter (at least 32 bytes)
SECRET = "integration-test-secret-0123456789abcdef"
#: the user and password of the htpasswd file the tests write
USER, PASSWORD = "alice", "correct horse battery staple"
#: what a request id looks like (a per-process prefix, a counter)
REQUEST_ID = re.compile(rb"\A[0-9a-f]{8}-[0-9a-f]+\Z")


def token(secret: str = SECRET, **claims: Any) -> bytes:
    """
    An HS256 JWT with C{claims} (C{sub = "alice"} and an C{exp} an hour
    away unless given).
    """
    claims.setdefault("sub", "alice")
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, secret, algorithm="HS256").encode("ascii")


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8"))


def request(
    path: bytes,
    extra: bytes = b"",
    method: bytes = b"GET",
    body: bytes = b"",
    host: bytes = b"gw.test",
) -> bytes:
    """
    An HTTP/1.1 request in origin form; a C{body} gets a Content-Length.
    """
    head = method + b" " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra
    if body or method in (b"POST", b"PUT"):
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def json_request(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return request(path, b"Content-Type: application/json\r\n" + extra, b"POST", body)


def gateway_origin(proto: OriginProtocol, req: OriginRequest, keep_alive: bool) -> bool:
    """
    An origin handler: every request is echoed (see L{Response.echo}), with
    a C{Server} header, and with the request's C{Content-Type} (so a JSON
    body comes back as JSON).
    """
    pairs = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in req.headers]
    headers = [
        (b"X-Echo-Method", req.method),
        (b"X-Echo-Target", req.target),
        (b"X-Echo-Headers", json.dumps(pairs).encode("ascii")),
        (b"Server", b"test-origin/1.0"),
    ]
    content_type = req.values(b"content-type")
    if content_type:
        headers.append((b"Content-Type", content_type[0]))
    if req.path.startswith("/v1/big"):
        # a JSON response of ?size= bytes, chunked with ?chunked=1
        size = int(req.query.get("size", "1000"))
        body = b'"' + b"v" * (size - 2) + b'"'
        if req.query.get("chunked"):
            pieces = [
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            ]
            for i in range(0, len(body), 100):
                chunk = body[i : i + 100]
                pieces.append(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            pieces.append(b"0\r\n\r\n")
            proto.transport.write(b"".join(pieces))
        else:
            proto.send(req, keep_alive, body, [(b"Content-Type", b"application/json")])
        return True
    if req.path.startswith("/v1/no-json"):
        # a response that claims JSON but is not
        proto.send(req, keep_alive, b"{not json", headers)
        return True
    proto.send(req, keep_alive, req.body, headers)
    return True


# --- custom filters, named in configs by dotted path ---------------------------------


@implementer(IRequestFilter)
class SlowFilter:
    """
    A custom filter whose verdict comes later (C{reactor.callLater}):
    paths containing C{deny} get a 451 from it, those containing C{fail} a
    failed Deferred, those containing C{raise} an exception at once;
    others pass.
    It records the paths it judged in C{SlowFilter.seen}.
    """

    seen: List[str] = []

    def __init__(self, name: str, table: Dict[str, Any], reactor: Any) -> None:
        self.name = name
        self.reactor = reactor
        self.delay = float(table.get("delay", 0.05))
        self.deny = str(table.get("deny", "/private/"))
        self.fail = str(table.get("fail", "/fail/"))
        self.raise_ = str(table.get("raise", "/raise/"))

    def filter_request(self, request: RequestInfo) -> Any:
        SlowFilter.seen.append(request.path)
        if self.raise_ in request.path:
            raise RuntimeError("this filter is broken")
        if self.fail in request.path:
            return deferLater(self.reactor, self.delay, lambda: 1 / 0)
        verdict: Optional[Deny] = None
        if self.deny in request.path:
            verdict = Deny(451, self.name, "not for you", ((b"X-Denied-By", b"slow"),))
        return deferLater(self.reactor, self.delay, lambda: verdict)


@implementer(IRequestFilter, IResponseFilter)
class BrokenResponseFilter:
    """
    A custom filter that lets every request through and raises on the
    response to paths containing C{/broken}; it tags other responses.
    """

    def __init__(self, name: str, table: Dict[str, Any], reactor: Any) -> None:
        self.name = name

    def filter_request(self, request: RequestInfo) -> None:
        return None

    def filter_response(self, request: RequestInfo, response: Any) -> None:
        if "/broken" in request.path:
            raise ValueError("this response filter is broken")
        response.headers.append((b"X-Checked", b"yes"))


# --- the cases ------------------------------------------------------------------------


class GatewayCase(TestCase):
    """
    Each test gets a L{Harness} and an origin answering with
    L{gateway_origin}.
    """

    timeout = 15

    def setUp(self) -> None:
        self.h = Harness(self)
        self.origin = self.h.origin("api")
        self.origin.handler = gateway_origin
        SlowFilter.seen = []

    def htpasswd(self) -> str:
        """
        The absolute path of a new htpasswd file with one bcrypt entry
        (cost 4: fast enough for tests, the same code path).
        """
        path = os.path.abspath(self.mktemp())
        hashed = bcrypt.hashpw(PASSWORD.encode("utf-8"), bcrypt.gensalt(4)).decode("ascii")
        with open(path, "w") as f:
            f.write(f"# made by the test\n{USER}:{hashed}\n")
        return path

    def gateway(
        self,
        burst: int = 50,
        threshold: int = 2,
        extra_filters: Optional[Dict[str, Any]] = None,
        extra_routes: Optional[List[Dict[str, Any]]] = None,
    ) -> RunningProxy:
        """
        The gateway described in the module docstring, logging to a file;
        the listener's rate limit is C{rate = 1, per = 60} with C{burst},
        and its ip_block blocks after C{threshold} refusals.
        """
        routes = list(extra_routes or []) + [
            {"path": "/api/", "backend": "api", "filters": ["api-jwt", "stamp"]},
            {"path": "/admin/", "backend": "api", "filters": ["staff"]},
            {"path": "/v1/", "backend": "api", "filters": ["v1-compat"]},
            {"path": "/", "backend": "api"},
        ]
        config = reverse_config(
            routes,
            {"api": {"servers": servers(self.origin)}},
            {
                "filters": ["abusers", "methods", "per-ip"],
                # the headers filter, not the listener, removes Server here
                "hide_headers": [],
            },
            {"access_log": os.path.abspath(self.mktemp())},
        )
        config["filter"] = {
            "abusers": {
                "type": "ip_block",
                "watch": ["per-ip"],
                "threshold": threshold,
                "window": 60,
                "block_for": 30,
            },
            "methods": {"type": "acl", "methods": ["GET", "HEAD", "POST"]},
            "per-ip": {"type": "rate_limit", "rate": 1, "per": 60, "burst": burst},
            "api-jwt": {
                "type": "jwt",
                "algorithms": ["HS256"],
                "secret": SECRET,
                "forward_claims": {"sub": "X-User"},
                "realm": "api",
            },
            "stamp": {
                "type": "headers",
                "request": {
                    "set": {
                        "X-Request-Id": "{request_id}",
                        "X-Seen": "{client_ip} {host} {method} {path}",
                    }
                },
                "response": {
                    "add": {
                        "X-Gateway": "1",
                        "X-Served-Path": "{path}",
                        "X-Request-Id": "{request_id}",
                    },
                    "remove": ["Server"],
                },
            },
            "staff": {"type": "basic_auth", "htpasswd": self.htpasswd(), "realm": "staff"},
            "v1-compat": {
                "type": "transform",
                "request": "twisted_proxy.examples.transforms:v1_to_v2",
                "response": "twisted_proxy.examples.transforms:v2_to_v1",
                "max_body": 64,
            },
        }
        config["filter"].update(extra_filters or {})
        running = self.h.start(config)
        self.assertEqual(running.service.failures, [])
        return running

    @inlineCallbacks
    def fetch(self, proxy: RunningProxy, data: bytes, method: bytes = b"GET") -> Gen:
        """
        Send C{data} on a new connection; the response (the connection is
        closed afterwards).
        """
        client: RawClient = yield self.h.client(proxy.port)
        client.send(data)
        response: Response = yield client.response(method)
        client.transport.loseConnection()
        yield client.closed()
        return response

    def log_line(self, proxy: RunningProxy, index: int = -1) -> Dict[str, Any]:
        return proxy.access_log()[index]

    def assertLogged(
        self, proxy: RunningProxy, status: int, decision: str, rule: str, index: int = -1
    ) -> None:
        line = self.log_line(proxy, index)
        self.assertEqual(
            (line["status"], line["decision"], line["rule"]), (status, decision, rule)
        )


class ChainOrderTests(GatewayCase):
    """
    The listener's filters run before the route's, in the order named;
    the first refusal answers.
    """

    @inlineCallbacks
    def test_listener_acl_before_route_jwt(self) -> Gen:
        """
        A method the listener's acl refuses is a 403 from the acl even on
        a route whose jwt would also refuse it: no Bearer challenge, the
        access log names the acl, the origin sees nothing.
        """
        proxy = self.gateway()
        response = yield self.fetch(proxy, request(b"/api/items", method=b"DELETE"))
        self.assertEqual(response.status, 403)
        self.assertIsNone(response.header(b"www-authenticate"))
        self.assertIn(b"method DELETE not allowed by filter methods", response.body)
        self.assertLogged(proxy, 403, "deny", "methods")
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_listener_rate_limit_before_route_jwt(self) -> Gen:
        """
        Requests without a token take the rate limit's tokens before jwt
        refuses them; once the bucket is empty the answer is the rate
        limit's 429, not jwt's 401.
        """
        proxy = self.gateway(burst=2, threshold=10)
        for _ in range(2):
            response = yield self.fetch(proxy, request(b"/api/items"))
            self.assertEqual(response.status, 401)
        response = yield self.fetch(proxy, request(b"/api/items"))
        self.assertEqual(response.status, 429)
        self.assertIsNone(response.header(b"www-authenticate"))
        rules = [(line["status"], line["rule"]) for line in proxy.access_log()]
        self.assertEqual(rules, [(401, "api-jwt"), (401, "api-jwt"), (429, "per-ip")])

    @inlineCallbacks
    def test_route_without_filters(self) -> Gen:
        """
        A route without filters of its own only has the listener's: no
        token needed, no header edits, the origin's Server header is kept.
        """
        proxy = self.gateway()
        response = yield self.fetch(proxy, request(b"/open", b"X-User: mallory\r\n"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"server"), b"test-origin/1.0")
        self.assertIsNone(response.header(b"x-gateway"))
        seen = response.echo()
        self.assertEqual(seen.values(b"x-request-id"), [])
        # jwt's forward_claims strip only applies where jwt runs
        self.assertEqual(seen.values(b"x-user"), [b"mallory"])
        self.assertLogged(proxy, 200, "allow", "")


class JwtTests(GatewayCase):
    """
    The jwt filter of the /api/ route, answering as RFC 6750 says.
    """

    @inlineCallbacks
    def assertRefused(self, proxy: RunningProxy, extra: bytes, challenge: bytes) -> Gen:
        response = yield self.fetch(proxy, request(b"/api/items", extra))
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header(b"www-authenticate"), challenge)
        self.assertLogged(proxy, 401, "deny", "api-jwt")
        return response

    @inlineCallbacks
    def test_missing(self) -> Gen:
        """
        No token: 401 with a plain Bearer challenge naming the realm.
        """
        proxy = self.gateway()
        yield self.assertRefused(proxy, b"", b'Bearer realm="api"')
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_invalid_signature(self) -> Gen:
        """
        A token signed with another secret: 401 invalid_token.
        """
        proxy = self.gateway()
        bad = token(secret="another-secret-of-at-least-32-bytes!!")
        response = yield self.assertRefused(
            proxy,
            b"Authorization: Bearer " + bad + b"\r\n",
            b'Bearer realm="api", error="invalid_token",'
            b' error_description="the signature does not verify"',
        )
        self.assertIn(b"signature", response.body)
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_malformed(self) -> Gen:
        """
        Something that is no JWT: 401 invalid_token.
        """
        proxy = self.gateway()
        yield self.assertRefused(
            proxy,
            b"Authorization: Bearer not.a.token\r\n",
            b'Bearer realm="api", error="invalid_token",'
            b' error_description="the token is malformed"',
        )

    @inlineCallbacks
    def test_expired(self) -> Gen:
        """
        An expired token: 401 invalid_token saying it expired.
        """
        proxy = self.gateway()
        old = token(exp=int(time.time()) - 60)
        yield self.assertRefused(
            proxy,
            b"Authorization: Bearer " + old + b"\r\n",
            b'Bearer realm="api", error="invalid_token", error_description="the token expired"',
        )
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_valid(self) -> Gen:
        """
        A valid token passes; the backend sees the C{sub} claim in X-User
        and not the X-User the client sent; the token itself is passed on.
        """
        proxy = self.gateway()
        good = token()
        response = yield self.fetch(
            proxy,
            request(
                b"/api/items",
                b"X-User: mallory\r\nAuthorization: Bearer " + good + b"\r\nx-user: eve\r\n",
            ),
        )
        self.assertEqual(response.status, 200)
        seen = response.echo()
        self.assertEqual(seen.values(b"x-user"), [b"alice"])
        self.assertEqual(seen.values(b"authorization"), [b"Bearer " + good])
        self.assertLogged(proxy, 200, "allow", "")

    @inlineCallbacks
    def test_valid_then_invalid_on_one_connection(self) -> Gen:
        """
        On one keep-alive connection each request is judged by itself: a
        valid token, then none, then the valid one again (remembered).
        """
        proxy = self.gateway()
        good = b"Authorization: Bearer " + token() + b"\r\n"
        client: RawClient = yield self.h.client(proxy.port)
        statuses = []
        for extra in (good, b"", good):
            client.send(request(b"/api/items", extra))
            response: Response = yield client.response()
            statuses.append(response.status)
        self.assertEqual(statuses, [200, 401, 200])
        self.assertEqual(len(self.origin.requests), 2)


class HeadersTests(GatewayCase):
    """
    The headers filter of the /api/ route, after jwt.
    """

    @inlineCallbacks
    def test_placeholders(self) -> Gen:
        """
        The backend sees X-Request-Id set to the request's id (not the
        client's), and the other placeholders filled; the client sees
        X-Gateway added, its path and request id, and no Server header.
        """
        proxy = self.gateway()
        auth = b"Authorization: Bearer " + token() + b"\r\n"
        response = yield self.fetch(
            proxy, request(b"/api/items?q=1", auth + b"X-Request-Id: spoofed\r\n")
        )
        self.assertEqual(response.status, 200)
        seen = response.echo()
        [request_id] = seen.values(b"x-request-id")
        self.assertRegex(request_id, REQUEST_ID)
        self.assertEqual(seen.values(b"x-seen"), [b"127.0.0.1 gw.test GET /api/items?q=1"])
        self.assertEqual(response.header_values(b"x-gateway"), [b"1"])
        self.assertEqual(response.header_values(b"x-served-path"), [b"/api/items?q=1"])
        # the client is told the id the backend saw
        self.assertEqual(response.header_values(b"x-request-id"), [request_id])
        self.assertIsNone(response.header(b"server"))
        # another request has another id
        second = yield self.fetch(proxy, request(b"/api/other", auth))
        [other_id] = second.echo().values(b"x-request-id")
        self.assertRegex(other_id, REQUEST_ID)
        self.assertNotEqual(other_id, request_id)

    @inlineCallbacks
    def test_not_on_refusals(self) -> Gen:
        """
        A refusal by jwt is the proxy's own answer: the response edits of
        the route's headers filter are not applied to it.
        """
        proxy = self.gateway()
        response = yield self.fetch(proxy, request(b"/api/items"))
        self.assertEqual(response.status, 401)
        self.assertIsNone(response.header(b"x-gateway"))


class BasicAuthTests(GatewayCase):
    """
    The basic_auth filter of the /admin/ route on a reverse listener.
    """

    @inlineCallbacks
    def test_no_credentials(self) -> Gen:
        """
        No credentials: 401 with a Basic challenge for the realm.
        """
        proxy = self.gateway()
        response = yield self.fetch(proxy, request(b"/admin/"))
        self.assertEqual(response.status, 401)
        self.assertEqual(
            response.header(b"www-authenticate"), b'Basic realm="staff", charset="UTF-8"'
        )
        self.assertIsNone(response.header(b"proxy-authenticate"))
        self.assertLogged(proxy, 401, "deny", "staff")
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_wrong_password(self) -> Gen:
        """
        A wrong password (checked in the thread pool) or an unknown user:
        401, and again from memory the second time.
        """
        proxy = self.gateway()
        for user, password in [(USER, "wrong"), ("mallory", PASSWORD), (USER, "wrong")]:
            response = yield self.fetch(
                proxy, request(b"/admin/", b"Authorization: " + basic(user, password) + b"\r\n")
            )
            self.assertEqual(response.status, 401)
            self.assertIsNotNone(response.header(b"www-authenticate"))
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_valid(self) -> Gen:
        """
        The right credentials pass, twice (the second time from memory);
        the backend never sees the Authorization header.
        """
        proxy = self.gateway()
        client: RawClient = yield self.h.client(proxy.port)
        for _ in range(2):
            client.send(
                request(b"/admin/panel", b"Authorization: " + basic(USER, PASSWORD) + b"\r\n")
            )
            response: Response = yield client.response()
            self.assertEqual(response.status, 200)
            self.assertNotIn(b"authorization", response.echo().names())
        self.assertEqual(
            [r.values(b"authorization") for r in self.origin.requests], [[], []]
        )
        self.assertLogged(proxy, 200, "allow", "")

    @inlineCallbacks
    def test_concurrent_first_checks(self) -> Gen:
        """
        Several connections sending the same new credentials at once all
        pass (they share one check in the thread pool).
        """
        proxy = self.gateway()
        clients = []
        for _ in range(3):
            client: RawClient = yield self.h.client(proxy.port)
            clients.append(client)
        for client in clients:
            client.send(request(b"/admin/x", b"Authorization: " + basic(USER, PASSWORD) + b"\r\n"))
        for client in clients:
            response: Response = yield client.response()
            self.assertEqual(response.status, 200)
        self.assertEqual(len(self.origin.requests), 3)


class TransformTests(GatewayCase):
    """
    The transform filter of the /v1/ route: JSON bodies rewritten both ways.
    """

    @inlineCallbacks
    def test_round_trip(self) -> Gen:
        """
        The backend receives the v2 form (with its new Content-Length and
        no Accept-Encoding); the client gets the v1 form back.
        """
        proxy = self.gateway()
        body = b'{"name": "Ada", "age": 36}'
        response = yield self.fetch(
            proxy, json_request(b"/v1/users", body, b"Accept-Encoding: gzip\r\n")
        )
        self.assertEqual(response.status, 200)
        [received] = self.origin.requests
        v2 = b'{"full_name":"Ada","age":36,"version":2}'
        self.assertEqual(received.body, v2)
        self.assertEqual(received.values(b"content-length"), [b"%d" % len(v2)])
        self.assertEqual(received.values(b"accept-encoding"), [])
        self.assertEqual(response.body, b'{"name":"Ada","age":36}')
        self.assertEqual(response.header(b"content-length"), b"%d" % len(response.body))
        self.assertEqual(response.header(b"content-type"), b"application/json")
        self.assertLogged(proxy, 200, "allow", "")

    @inlineCallbacks
    def test_chunked_request(self) -> Gen:
        """
        A chunked JSON request body is read whole, rewritten and sent with
        a Content-Length.
        """
        proxy = self.gateway()
        data = (
            b"POST /v1/users HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"7\r\n[{\"name\r\n9\r\n\": \"Bob\"}\r\n1\r\n]\r\n0\r\n\r\n"
        )
        response = yield self.fetch(proxy, data)
        self.assertEqual(response.status, 200)
        [received] = self.origin.requests
        self.assertEqual(received.body, b'[{"full_name":"Bob","version":2}]')
        self.assertEqual(received.values(b"transfer-encoding"), [])
        self.assertEqual(response.body, b'[{"name":"Bob"}]')

    @inlineCallbacks
    def test_too_big(self) -> Gen:
        """
        A JSON body over max_body (64 bytes) is a 413 from the filter and
        never reaches the backend.
        """
        proxy = self.gateway()
        body = json.dumps({"name": "x" * 100}).encode("ascii")
        response = yield self.fetch(proxy, json_request(b"/v1/users", body))
        self.assertEqual(response.status, 413)
        self.assertLogged(proxy, 413, "deny", "v1-compat")
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_invalid_json(self) -> Gen:
        """
        A request body that is not JSON is a 400 naming the filter, and the
        connection serves the next request.
        """
        proxy = self.gateway()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(json_request(b"/v1/users", b"{name: Ada"))
        response: Response = yield client.response()
        self.assertEqual(response.status, 400)
        self.assertIn(b"v1-compat", response.body)
        self.assertLogged(proxy, 400, "deny", "v1-compat")
        self.assertEqual(self.origin.requests, [])
        client.send(json_request(b"/v1/users", b'{"name": "Ada"}'))
        response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b'{"name":"Ada"}'))

    @inlineCallbacks
    def test_other_types_stream(self) -> Gen:
        """
        A body of another type is not buffered: bigger than max_body, it
        passes unchanged.
        """
        proxy = self.gateway()
        body = b"x" * 1000
        response = yield self.fetch(
            proxy, request(b"/v1/upload", b"Content-Type: text/plain\r\n", b"POST", body)
        )
        self.assertEqual((response.status, response.body), (200, body))

    @inlineCallbacks
    def test_response_not_json(self) -> Gen:
        """
        A JSON response that cannot be parsed passes unchanged.
        """
        proxy = self.gateway()
        response = yield self.fetch(proxy, json_request(b"/v1/no-json", b'{"name": "A"}'))
        self.assertEqual((response.status, response.body), (200, b"{not json"))


class AsyncFilterAndTransformTests(GatewayCase):
    """
    A body to transform while an asynchronous filter (basic_auth's first
    check, in the thread pool) decides.
    """

    def secure(self) -> RunningProxy:
        return self.gateway(
            extra_routes=[
                {"path": "/secure/", "backend": "api", "filters": ["staff", "v1-compat"]}
            ]
        )

    @inlineCallbacks
    def test_transformed_after_check(self) -> Gen:
        """
        The body waits for the check, then is rewritten; the backend sees
        neither the credentials nor the v1 form.
        """
        proxy = self.secure()
        auth = b"Authorization: " + basic(USER, PASSWORD) + b"\r\n"
        response = yield self.fetch(proxy, json_request(b"/secure/users", b'{"name": "Ada"}', auth))
        self.assertEqual((response.status, response.body), (200, b'{"name":"Ada"}'))
        [received] = self.origin.requests
        self.assertEqual(received.body, b'{"full_name":"Ada","version":2}')
        self.assertEqual(received.values(b"authorization"), [])

    @inlineCallbacks
    def test_too_big_during_check(self) -> Gen:
        """
        A body over max_body that arrives while the check runs is a 413;
        the check's later verdict changes nothing.
        """
        proxy = self.secure()
        auth = b"Authorization: " + basic(USER, PASSWORD) + b"\r\n"
        body = json.dumps({"name": "x" * 200}).encode("ascii")
        response = yield self.fetch(proxy, json_request(b"/secure/users", body, auth))
        self.assertEqual(response.status, 413)
        yield deferLater(self.h.reactor, 0.3, lambda: None)
        self.assertEqual(self.origin.requests, [])
        [line] = proxy.access_log()
        self.assertEqual((line["status"], line["rule"]), (413, "v1-compat"))

    @inlineCallbacks
    def test_refused_with_body(self) -> Gen:
        """
        Wrong credentials with a JSON body: 401, and the body is never
        sent anywhere.
        """
        proxy = self.secure()
        auth = b"Authorization: " + basic(USER, "nope") + b"\r\n"
        response = yield self.fetch(proxy, json_request(b"/secure/users", b'{"name": "A"}', auth))
        self.assertEqual(response.status, 401)
        self.assertEqual(self.origin.requests, [])


class TransformResponseLimitTests(GatewayCase):
    """
    Response bodies the transform filter buffers are bounded by max_body.
    """

    @inlineCallbacks
    def test_small_response(self) -> Gen:
        """
        A JSON response within max_body is transformed (a string is
        passed through by the example functions), chunked or not.
        """
        proxy = self.gateway()
        for query in (b"", b"&chunked=1"):
            response = yield self.fetch(proxy, request(b"/v1/big?size=50" + query))
            self.assertEqual((response.status, response.body), (200, b'"' + b"v" * 48 + b'"'))
            self.assertFalse(response.chunked)

    @inlineCallbacks
    def test_too_big_response(self) -> Gen:
        """
        A JSON response over max_body is a 502 (fixed length or chunked),
        logged as an error, and the client connection goes on.
        """
        proxy = self.gateway()
        client: RawClient = yield self.h.client(proxy.port)
        for query in (b"", b"&chunked=1"):
            client.send(request(b"/v1/big?size=5000" + query))
            response: Response = yield client.response()
            self.assertEqual(response.status, 502)
            self.assertLogged(proxy, 502, "error", "")
        client.send(request(b"/v1/big?size=20"))
        response = yield client.response()
        self.assertEqual(response.status, 200)


class RateLimitTests(GatewayCase):
    """
    The listener's in-memory rate limit (rate 1 per 60 s) and the ip_block
    filter watching it.
    """

    @inlineCallbacks
    def test_burst_then_429(self) -> Gen:
        """
        Two requests pass (the burst); the third is a 429 with Retry-After
        and the draft's RateLimit-Policy and RateLimit fields, logged as
        denied by the filter.
        """
        proxy = self.gateway(burst=2, threshold=10)
        for _ in range(2):
            response = yield self.fetch(proxy, request(b"/open"))
            self.assertEqual(response.status, 200)
        response = yield self.fetch(proxy, request(b"/open"))
        self.assertEqual(response.status, 429)
        retry = int(response.header(b"retry-after") or b"0")
        self.assertTrue(59 <= retry <= 60, retry)
        self.assertEqual(response.header(b"ratelimit-policy"), b'"per-ip";q=1;w=60')
        self.assertEqual(response.header(b"ratelimit"), b'"per-ip";r=0;t=%d' % retry)
        self.assertIsNone(response.header(b"ratelimit-limit"))
        self.assertLogged(proxy, 429, "deny", "per-ip")
        self.assertEqual(len(self.origin.requests), 2)

    @inlineCallbacks
    def test_ip_block(self) -> Gen:
        """
        After two refusals by the rate limit, the ip_block filter watching
        it blocks the client: 403 naming both filters, logged as its own.
        """
        proxy = self.gateway(burst=2, threshold=2)
        statuses = []
        for _ in range(6):
            response = yield self.fetch(proxy, request(b"/open"))
            statuses.append(response.status)
        self.assertEqual(statuses, [200, 200, 429, 429, 403, 403])
        self.assertIn(b"abusers", response.body)
        self.assertIn(b"per-ip", response.body)
        rules = [line["rule"] for line in proxy.access_log()]
        self.assertEqual(rules, ["", "", "per-ip", "per-ip", "abusers", "abusers"])
        self.assertEqual(len(self.origin.requests), 2)

    @inlineCallbacks
    def test_ip_block_on_one_connection(self) -> Gen:
        """
        Refusals on one keep-alive connection count as well, and the
        connection stays usable for the answers.
        """
        proxy = self.gateway(burst=1, threshold=2)
        client: RawClient = yield self.h.client(proxy.port)
        statuses = []
        for _ in range(4):
            client.send(request(b"/open"))
            response: Response = yield client.response()
            statuses.append(response.status)
        self.assertEqual(statuses, [200, 429, 429, 403])


class ForwardBasicAuthTests(GatewayCase):
    """
    basic_auth on a forward listener: Proxy-Authorization and 407.
    """

    def forward(self) -> RunningProxy:
        return self.h.proxy(
            {"filters": ["staff"]},
            filters={"staff": {"type": "basic_auth", "htpasswd": self.htpasswd()}},
            access_log=True,
        )

    def absolute(self, extra: bytes = b"") -> bytes:
        authority = b"127.0.0.1:%d" % self.origin.port
        return (
            b"GET http://" + authority + b"/page HTTP/1.1\r\nHost: " + authority + b"\r\n"
            + extra + b"\r\n"
        )

    @inlineCallbacks
    def test_no_credentials(self) -> Gen:
        """
        No Proxy-Authorization: 407 with Proxy-Authenticate; an
        Authorization header (meant for the origin) does not count.
        """
        proxy = self.forward()
        for extra in (b"", b"Authorization: " + basic(USER, PASSWORD) + b"\r\n"):
            response = yield self.fetch(proxy, self.absolute(extra))
            self.assertEqual(response.status, 407)
            self.assertEqual(
                response.header(b"proxy-authenticate"),
                b'Basic realm="twisted-proxy", charset="UTF-8"',
            )
            self.assertIsNone(response.header(b"www-authenticate"))
        self.assertLogged(proxy, 407, "deny", "staff")
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_wrong_credentials(self) -> Gen:
        """
        Wrong Proxy-Authorization: 407.
        """
        proxy = self.forward()
        response = yield self.fetch(
            proxy, self.absolute(b"Proxy-Authorization: " + basic(USER, "nope") + b"\r\n")
        )
        self.assertEqual(response.status, 407)

    @inlineCallbacks
    def test_valid(self) -> Gen:
        """
        The right Proxy-Authorization passes; the origin never sees it,
        while the client's own Authorization reaches it.
        """
        proxy = self.forward()
        response = yield self.fetch(
            proxy,
            self.absolute(
                b"Proxy-Authorization: " + basic(USER, PASSWORD) + b"\r\n"
                b"Authorization: Bearer for-the-origin\r\n"
            ),
        )
        self.assertEqual(response.status, 200)
        [received] = self.origin.requests
        self.assertEqual(received.values(b"proxy-authorization"), [])
        self.assertEqual(received.values(b"authorization"), [b"Bearer for-the-origin"])
        self.assertLogged(proxy, 200, "allow", "")


class ForwardConnectAuthTests(GatewayCase):
    """
    basic_auth guards CONNECT tunnels on a forward listener too.
    """

    @inlineCallbacks
    def test_connect(self) -> Gen:
        """
        CONNECT without credentials: 407 and the connection closes; with
        them: the tunnel opens and carries bytes both ways.
        """
        echo = self.h.echo_server()
        proxy = self.h.proxy(
            {"filters": ["staff"], "connect_ports": [echo.port]},
            filters={"staff": {"type": "basic_auth", "htpasswd": self.htpasswd()}},
        )
        authority = b"127.0.0.1:%d" % echo.port
        connect = b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n"
        client: RawClient = yield self.h.client(proxy.port)
        client.send(connect + b"\r\n")
        response: Response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 407)
        self.assertIsNotNone(response.header(b"proxy-authenticate"))
        yield client.closed()
        self.assertEqual(echo.connections_made, 0)
        client = yield self.h.client(proxy.port)
        client.send(
            connect + b"Proxy-Authorization: " + basic(USER, PASSWORD) + b"\r\n\r\n"
        )
        response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 200)
        client.send(b"ping through the tunnel")
        echoed = yield client.nbytes(len(b"ping through the tunnel"))
        self.assertEqual(echoed, b"ping through the tunnel")


class CustomFilterTests(GatewayCase):
    """
    Filters named by dotted path: Deferred verdicts, and failures that
    become 500s.
    """

    def custom(self, *names: str) -> RunningProxy:
        filters = {
            "slow": {"type": "tests.test_integration_gateway:SlowFilter", "delay": 0.05},
            "checker": {"type": "tests.test_integration_gateway:BrokenResponseFilter"},
        }
        return self.gateway(
            extra_filters=filters,
            extra_routes=[{"path": "/custom/", "backend": "api", "filters": list(names)}],
        )

    @inlineCallbacks
    def test_deferred_verdicts(self) -> Gen:
        """
        A Deferred that fires later with a Deny answers with it (status,
        headers, rule); one that fires with None lets the request through.
        """
        proxy = self.custom("slow")
        response = yield self.fetch(proxy, request(b"/custom/private/x"))
        self.assertEqual(response.status, 451)
        self.assertEqual(response.header(b"x-denied-by"), b"slow")
        self.assertIn(b"not for you", response.body)
        self.assertLogged(proxy, 451, "deny", "slow")
        response = yield self.fetch(proxy, request(b"/custom/public"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.echo().target, "/custom/public")
        self.assertEqual(SlowFilter.seen, ["/custom/private/x", "/custom/public"])
        self.assertEqual([r.path for r in self.origin.requests], ["/custom/public"])

    @inlineCallbacks
    def test_pipelined_in_order(self) -> Gen:
        """
        Pipelined requests waiting on the slow filter are answered in
        order, each with its own verdict.
        """
        proxy = self.custom("slow")
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            request(b"/custom/a") + request(b"/custom/private/b") + request(b"/custom/c")
        )
        statuses = []
        for _ in range(3):
            response: Response = yield client.response()
            statuses.append(response.status)
        self.assertEqual(statuses, [200, 451, 200])
        self.assertEqual([r.path for r in self.origin.requests], ["/custom/a", "/custom/c"])

    @inlineCallbacks
    def test_body_waits_for_verdict(self) -> Gen:
        """
        A POST's body sent while the filter decides reaches the backend
        whole once the request is allowed.
        """
        proxy = self.custom("slow")
        body = b"b" * 20000
        response = yield self.fetch(
            proxy, request(b"/custom/upload", b"Content-Type: text/plain\r\n", b"POST", body)
        )
        self.assertEqual((response.status, response.body), (200, body))

    @inlineCallbacks
    def test_chunked_body_waits_for_verdict(self) -> Gen:
        """
        The same with a chunked body, complete before the verdict.
        """
        proxy = self.custom("slow")
        data = (
            b"POST /custom/chunked HTTP/1.1\r\nHost: gw.test\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        response = yield self.fetch(proxy, data)
        self.assertEqual((response.status, response.body), (200, b"hello world"))

    @inlineCallbacks
    def test_expect_continue_after_verdict(self) -> Gen:
        """
        With C{Expect: 100-continue}, the 100 comes only once the filter
        has let the request through; a refused request gets no 100.
        """
        proxy = self.custom("slow")
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            b"POST /custom/private/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        response: Response = yield client.response(interim=True)
        self.assertEqual(response.status, 451)
        client = yield self.h.client(proxy.port)
        client.send(
            b"POST /custom/ok HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        response = yield client.response(interim=True)
        self.assertEqual(response.status, 100)
        client.send(b"hello")
        response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"hello"))

    @inlineCallbacks
    def test_raises(self) -> Gen:
        """
        A filter that raises: 500, logged as an error naming it, and the
        connection goes on with the next request.
        """
        proxy = self.custom("slow")
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/custom/raise/x"))
        response: Response = yield client.response()
        self.assertEqual(response.status, 500)
        self.assertLogged(proxy, 500, "error", "slow")
        client.send(request(b"/custom/fine"))
        response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @inlineCallbacks
    def test_raises_with_body_pending(self) -> Gen:
        """
        A filter that raises while the request body is still coming: 500
        and the connection is closed (the rest of the body is not read),
        never left hanging.
        """
        proxy = self.custom("slow")
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            b"POST /custom/raise/up HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\nabc"
        )
        response: Response = yield client.response()
        self.assertEqual(response.status, 500)
        self.assertEqual(response.header(b"connection"), b"close")
        yield client.closed()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @inlineCallbacks
    def test_failed_deferred(self) -> Gen:
        """
        A Deferred verdict that fails: 500, and the connection goes on.
        """
        proxy = self.custom("slow")
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/custom/fail/x"))
        response: Response = yield client.response()
        self.assertEqual(response.status, 500)
        self.assertLogged(proxy, 500, "error", "slow")
        client.send(request(b"/custom/fine"))
        response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @inlineCallbacks
    def test_client_gone_while_filtering(self) -> Gen:
        """
        A client that leaves (a reset) while the filter decides: the late
        verdict is ignored, the request never reaches the backend, the
        exchange is logged as 499. (A client that only half-closes after
        its request is still answered: that is not leaving.)
        """
        proxy = self.custom("slow")
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/custom/late"))
        yield self.h.wait_for(lambda: SlowFilter.seen)
        client.transport.abortConnection()
        yield client.closed()
        yield deferLater(self.h.reactor, 0.1, lambda: None)
        self.assertEqual(self.origin.requests, [])
        self.assertLogged(proxy, 499, "error", "")

    @inlineCallbacks
    def test_half_close_while_filtering(self) -> Gen:
        """
        A client that half-closes after its request while the filter
        decides still gets its answer, then the connection closes.
        """
        proxy = self.custom("slow")
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/custom/half"))
        client.transport.loseWriteConnection()
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        yield client.closed()
        self.assertEqual([r.path for r in self.origin.requests], ["/custom/half"])

    @inlineCallbacks
    def test_response_filter_raises(self) -> Gen:
        """
        A response filter that raises: 500 instead of the backend's
        response (fixed-length or chunked or empty), and the connection goes on.
        """
        proxy = self.custom("checker")
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/custom/fine"))
        response: Response = yield client.response()
        self.assertEqual((response.status, response.header(b"x-checked")), (200, b"yes"))
        client.send(request(b"/custom/broken", b"Content-Type: text/plain\r\n", b"POST", b"x" * 5000))
        response = yield client.response()
        self.assertEqual(response.status, 500)
        self.assertIsNone(response.header(b"x-checked"))
        self.assertLogged(proxy, 500, "error", "")
        client.send(request(b"/custom/fine"))
        response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    @inlineCallbacks
    def test_response_filter_raises_on_empty_body(self) -> Gen:
        """
        A response filter that raises on a response without a body (an
        empty POST echoed: Content-Length 0): still a 500, not a hang.
        """
        proxy = self.custom("checker")
        response = yield self.fetch(proxy, request(b"/custom/broken", method=b"POST"))
        self.assertEqual(response.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class ResponseFilterHeadTests(GatewayCase):
    """
    A response filter that raises on the response to a HEAD request.
    """

    @inlineCallbacks
    def test_head(self) -> Gen:
        """
        The 500 answering a HEAD has no body, and the connection carries
        the next request correctly.
        """
        proxy = self.gateway(
            extra_filters={
                "checker": {"type": "tests.test_integration_gateway:BrokenResponseFilter"}
            },
            extra_routes=[{"path": "/custom/", "backend": "api", "filters": ["checker"]}],
        )
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/custom/broken", method=b"HEAD") + request(b"/custom/fine"))
        yield self.h.wait_for(lambda: b"X-Checked: yes" in client.received)
        data = client.received
        self.assertTrue(data.startswith(b"HTTP/1.1 500 "), data)
        # right after the HEAD response's head comes the next response
        after = data[data.index(b"\r\n\r\n") + 4 :]
        self.assertTrue(after.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class ClaimKeyTests(GatewayCase):
    """
    Authentication filters put what they learnt in the claims for the
    filters after them.
    """

    @inlineCallbacks
    def test_rate_limit_by_claim(self) -> Gen:
        """
        A rate limit keyed by C{claim:sub} after jwt, and one keyed by
        C{claim:user} after basic_auth, count each user apart: the same
        client address gets 429 for one user and 200 for another.
        """
        proxy = self.gateway(
            extra_filters={
                "per-sub": {"type": "rate_limit", "rate": 1, "per": 60, "burst": 1,
                            "key": "claim:sub"},
                "per-user": {"type": "rate_limit", "rate": 1, "per": 60, "burst": 1,
                             "key": "claim:user"},
            },
            extra_routes=[
                {"path": "/keyed/jwt/", "backend": "api", "filters": ["api-jwt", "per-sub"]},
                {"path": "/keyed/basic/", "backend": "api", "filters": ["staff", "per-user"]},
            ],
        )
        alice = b"Authorization: Bearer " + token(sub="alice") + b"\r\n"
        bob = b"Authorization: Bearer " + token(sub="bob") + b"\r\n"
        statuses = []
        for extra in (alice, alice, bob):
            response = yield self.fetch(proxy, request(b"/keyed/jwt/x", extra))
            statuses.append(response.status)
        self.assertEqual(statuses, [200, 429, 200])
        self.assertLogged(proxy, 200, "allow", "")
        self.assertEqual(proxy.access_log()[1]["rule"], "per-sub")
        staff = b"Authorization: " + basic(USER, PASSWORD) + b"\r\n"
        statuses = []
        for extra in (staff, staff):
            response = yield self.fetch(proxy, request(b"/keyed/basic/x", extra))
            statuses.append(response.status)
        self.assertEqual(statuses, [200, 429])


class RedisSharedTests(TestCase):
    """
    Two proxy services sharing one real redis-server for a rate limit.
    """

    timeout = 15

    def setUp(self) -> Any:
        if REDIS_SERVER is None:
            raise SkipTest("redis-server is not installed (apt install redis-server)")
        self.h = Harness(self)
        self.origin = self.h.origin("api")
        self.origin.handler = gateway_origin
        self.redis = RedisServer(os.path.abspath(self.mktemp()), unused_port())
        self.addCleanup(self.redis.stop)
        return self.redis.start()

    def proxy(self, fail_open: bool = True) -> RunningProxy:
        """
        A service with a reverse listener whose rate limit (burst 2, one
        token a minute) keeps its buckets in the test's Redis.
        """
        config = reverse_config(
            [{"path": "/", "backend": "api"}],
            {"api": {"servers": servers(self.origin)}},
            {"filters": ["shared"]},
            {"access_log": os.path.abspath(self.mktemp())},
        )
        config["filter"] = {
            "shared": {
                "type": "rate_limit",
                "rate": 1,
                "per": 60,
                "burst": 2,
                "backend": f"redis://127.0.0.1:{self.redis.port}/0",
                "fail_open": fail_open,
                "timeout": 0.3,
            }
        }
        running = self.h.start(config)
        self.assertEqual(running.service.failures, [])
        return running

    @inlineCallbacks
    def fetch(self, proxy: RunningProxy, path: bytes = b"/x") -> Gen:
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(path))
        response: Response = yield client.response()
        client.transport.loseConnection()
        yield client.closed()
        return response

    @inlineCallbacks
    def test_shared_bucket(self) -> Gen:
        """
        What proxy A took from the bucket, proxy B cannot take again: B's
        first request is a 429 with the rate limit's headers.
        """
        a, b = self.proxy(), self.proxy()
        self.assertNotEqual(a.port, b.port)
        for _ in range(2):
            response = yield self.fetch(a)
            self.assertEqual(response.status, 200)
        response = yield self.fetch(b)
        self.assertEqual(response.status, 429)
        self.assertEqual(response.header(b"ratelimit-policy"), b'"shared";q=1;w=60')
        self.assertIsNotNone(response.header(b"retry-after"))
        [line] = b.access_log()
        self.assertEqual((line["decision"], line["rule"]), ("deny", "shared"))
        response = yield self.fetch(a)
        self.assertEqual(response.status, 429)
        self.assertEqual(len(self.origin.requests), 2)

    @inlineCallbacks
    def test_redis_stopped(self) -> Gen:
        """
        With Redis gone, the fail_open proxy lets requests through and the
        other answers 503 with Retry-After.
        """
        opened, closed = self.proxy(fail_open=True), self.proxy(fail_open=False)
        for proxy in (opened, closed):
            response = yield self.fetch(proxy)
            self.assertEqual(response.status, 200)
        self.redis.stop()
        for _ in range(3):
            response = yield self.fetch(opened)
            self.assertEqual(response.status, 200)
        response = yield self.fetch(closed)
        self.assertEqual(response.status, 503)
        self.assertEqual(response.header(b"retry-after"), b"1")
        self.assertIn(b"rate limit store unavailable", response.body)
        line = closed.access_log()[-1]
        self.assertEqual((line["status"], line["rule"]), (503, "shared"))


    @inlineCallbacks
    def test_tcp_listener(self) -> Gen:
        """
        A Redis rate limit on a tcp listener counts connections: past the
        burst a connection is closed before any server is contacted.
        """
        echo = self.h.echo_server()
        proxy = self.h.start(
            {
                "proxy": {"access_log": "off"},
                "listener": [
                    {
                        "name": "db",
                        "kind": "tcp",
                        "endpoint": "tcp:0:interface=127.0.0.1",
                        "backend": "db",
                        "filters": ["shared"],
                    }
                ],
                "backend": {"db": {"servers": servers(echo, scheme="tcp")}},
                "filter": {
                    "shared": {
                        "type": "rate_limit",
                        "rate": 1,
                        "per": 60,
                        "burst": 1,
                        "backend": f"redis://127.0.0.1:{self.redis.port}/0",
                    }
                },
            }
        )
        self.assertEqual(proxy.service.failures, [])
        client: RawClient = yield self.h.client(proxy.port)
        client.send(b"first")
        self.assertEqual((yield client.nbytes(5)), b"first")
        client.transport.loseConnection()
        yield client.closed()
        client = yield self.h.client(proxy.port)
        client.send(b"second")
        self.assertEqual((yield client.closed()), b"")
        self.assertEqual(echo.connections_made, 1)


class TcpFilterTests(TestCase):
    """
    Filters of a tcp listener judge each connection (its client address).
    """

    timeout = 15

    def setUp(self) -> None:
        self.h = Harness(self)

    @inlineCallbacks
    def test_deny_clients_closes(self) -> Gen:
        """
        A client in deny_clients is disconnected without a byte, the
        server is never contacted, the log names the filter.
        """
        echo = self.h.echo_server()
        proxy = self.h.start(
            {
                "proxy": {"access_log": os.path.abspath(self.mktemp())},
                "listener": [
                    {
                        "name": "db",
                        "kind": "tcp",
                        "endpoint": "tcp:0:interface=127.0.0.1",
                        "backend": "db",
                        "filters": ["no-local"],
                    }
                ],
                "backend": {"db": {"servers": servers(echo, scheme="tcp")}},
                "filter": {"no-local": {"type": "acl", "deny_clients": ["127.0.0.0/8"]}},
            }
        )
        self.assertEqual(proxy.service.failures, [])
        client: RawClient = yield self.h.client(proxy.port)
        client.send(b"hello")
        rest = yield client.closed()
        self.assertEqual(rest, b"")
        self.assertEqual(echo.connections_made, 0)
        yield self.h.wait_for(lambda: proxy.access_log())
        [line] = proxy.access_log()
        self.assertEqual((line["decision"], line["rule"]), ("deny", "no-local"))

    def tcp_proxy(self, echo: Any, table: Dict[str, Any]) -> RunningProxy:
        proxy = self.h.start(
            {
                "proxy": {"access_log": os.path.abspath(self.mktemp())},
                "listener": [
                    {
                        "name": "db",
                        "kind": "tcp",
                        "endpoint": "tcp:0:interface=127.0.0.1",
                        "backend": "db",
                        "filters": ["guard"],
                    }
                ],
                "backend": {"db": {"servers": servers(echo, scheme="tcp")}},
                "filter": {"guard": table},
            }
        )
        self.assertEqual(proxy.service.failures, [])
        return proxy

    @inlineCallbacks
    def test_deferred_deny(self) -> Gen:
        """
        A filter whose verdict comes later (a Deferred firing with a Deny)
        refuses the connection too: the server is never contacted.
        """
        echo = self.h.echo_server()
        proxy = self.tcp_proxy(
            echo, {"type": "tests.test_integration_gateway:SlowFilter", "deny": ""}
        )
        client: RawClient = yield self.h.client(proxy.port)
        client.send(b"hello")
        rest = yield client.closed()
        self.assertEqual(rest, b"")
        self.assertEqual(echo.connections_made, 0)
        yield self.h.wait_for(lambda: proxy.access_log())
        [line] = proxy.access_log()
        self.assertEqual((line["decision"], line["rule"]), ("deny", "guard"))

    @inlineCallbacks
    def test_deferred_allow(self) -> Gen:
        """
        A Deferred firing with None lets the connection through; what the
        client sent meanwhile arrives.
        """
        echo = self.h.echo_server()
        proxy = self.tcp_proxy(
            echo, {"type": "tests.test_integration_gateway:SlowFilter", "deny": "-"}
        )
        client: RawClient = yield self.h.client(proxy.port)
        client.send(b"early bytes")
        echoed = yield client.nbytes(11)
        self.assertEqual(echoed, b"early bytes")

    @inlineCallbacks
    def test_deferred_failure(self) -> Gen:
        """
        A Deferred verdict that fails closes the connection (logged).
        """
        echo = self.h.echo_server()
        proxy = self.tcp_proxy(
            echo, {"type": "tests.test_integration_gateway:SlowFilter", "fail": ""}
        )
        client: RawClient = yield self.h.client(proxy.port)
        rest = yield client.closed()
        self.assertEqual(rest, b"")
        self.assertEqual(echo.connections_made, 0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
