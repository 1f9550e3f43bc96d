"""
Tests for L{twisted_proxy.tls}: listeners terminating TLS (SNI, versions,
ALPN, client certificates, reload), backends over TLS (verification,
C{server_name}, mutual TLS, health probes), redirects to https, and the
configuration keys.

Handshakes are real, on 127.0.0.1 port 0, with certificates made by
trustme in each test: no private key is committed.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
from typing import Any, Dict, List, Optional, Sequence, Tuple

import trustme
from cryptography import x509
from OpenSSL import SSL
from zope.interface import implementer
from zope.interface.verify import verifyObject
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.iweb import IPolicyForHTTPS

from twisted_proxy.config import ConfigError, parse_config
from twisted_proxy.http.parser import BadRequest, RequestHead
from twisted_proxy.model import CertificateConfig, HealthConfig, ServerConfig, TLSConfig
from twisted_proxy.redirect import Redirect, RedirectRouter
from twisted_proxy.service import make_service
from twisted_proxy import tls as tls_module
from twisted_proxy.tls import (
    ALPN_PROTOCOLS,
    SERVER_GROUPS,
    BackendTLS,
    ListenerTLSFactory,
    ServerTLS,
    TLSFileError,
    backend_tls_policy,
    certificate_names,
    client_subject,
)
from twisted_proxy.upstream.backend import Server
from twisted_proxy.upstream.health import HTTPProbe

from .helpers import Harness, Origin, RawClient, servers

ROUTES = [{"path": "/", "backend": "web"}]


# --- certificates ----------------------------------------------------------------------


class Files:
    """
    Certificates made by trustme, written to a fresh folder of the test.
    """

    def __init__(self, case: Any) -> None:
        self.dir = os.path.abspath(case.mktemp())
        os.makedirs(self.dir)
        self.count = 0

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def ca(self, ca: trustme.CA) -> str:
        """
        The CA's certificate as a file (what clients trust).
        """
        self.count += 1
        path = self.path(f"ca{self.count}.pem")
        ca.cert_pem.write_to_path(path)
        return path

    def leaf(self, ca: trustme.CA, *names: str, common_name: Optional[str] = None) -> Tuple[str, str]:
        """
        A certificate for C{names} issued by C{ca}: the chain file and the
        key file.
        """
        cert = ca.issue_cert(*names, common_name=common_name)
        return self.write(cert)

    def write(self, cert: Any, cert_path: Optional[str] = None, key_path: Optional[str] = None) -> Tuple[str, str]:
        self.count += 1
        cert_path = cert_path or self.path(f"cert{self.count}.pem")
        key_path = key_path or self.path(f"key{self.count}.pem")
        with open(cert_path, "wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        cert.private_key_pem.write_to_path(key_path)
        return cert_path, key_path


def cert_entry(pair: Tuple[str, str]) -> Dict[str, str]:
    return {"cert": pair[0], "key": pair[1]}


def tls_config(*pairs: Tuple[str, str], **keys: Any) -> TLSConfig:
    return TLSConfig(
        certificates=tuple(CertificateConfig(cert=c, key=k) for c, k in pairs), **keys
    )


# --- a test TLS client ---------------------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """
    A client's TLS settings, as a test wants them: no verification unless
    C{ca} is given, any SNI, any version range, any ALPN offer, a client
    certificate.
    """

    def __init__(
        self,
        server_name: Optional[str] = None,
        ca: Optional[str] = None,
        max_version: Optional[int] = None,
        alpn: Sequence[bytes] = (b"http/1.1",),
        client: Optional[Tuple[str, str]] = None,
        legacy: bool = False,
    ) -> None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if legacy:
            # let OpenSSL itself offer old versions: the refusal must be the server's
            ctx.set_min_proto_version(0)
            ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        if max_version is not None:
            ctx.set_max_proto_version(max_version)
        if ca is not None:
            ctx.load_verify_locations(ca)
            ctx.set_verify(SSL.VERIFY_PEER)
        if alpn:
            ctx.set_alpn_protos(list(alpn))
        if client is not None:
            ctx.use_certificate_chain_file(client[0])
            ctx.use_privatekey_file(client[1])
        self.ctx = ctx
        self.server_name = server_name

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self.ctx, None)
        if self.server_name:
            conn.set_tlsext_host_name(self.server_name.encode("ascii"))
        return conn


@implementer(IHandshakeListener)
class TLSClient(RawClient):
    """
    A L{RawClient} over TLS; C{handshake} fires when the handshake is done
    (fails with the reason if the connection ends first).
    """

    def __init__(self, tracker: Any) -> None:
        RawClient.__init__(self, tracker)
        self.handshake: Deferred = Deferred()

    def handshakeCompleted(self) -> None:
        if not self.handshake.called:
            self.handshake.callback(self)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        RawClient.connectionLost(self, reason)
        if not self.handshake.called:
            self.handshake.errback(reason)

    def peer_names(self) -> List[str]:
        cert = self.transport.getPeerCertificate()
        return certificate_names(cert.to_cryptography())

    @property
    def alpn(self) -> Optional[bytes]:
        return self.transport.negotiatedProtocol  # type: ignore[no-any-return]


def tls_connect(harness: Harness, port: int, creator: Any) -> Deferred:
    """
    A L{TLSClient} connected to C{port}, once its handshake is done.
    """
    client = TLSClient(harness.tracker)
    harness.clients.append(client)
    endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(harness.reactor, "127.0.0.1", port, timeout=5))
    d = connectProtocol(endpoint, client)
    d.addCallback(lambda _: client.handshake)
    return d


class StdlibTLSClient(RawClient):
    """
    A TLS client made with Python's C{ssl} module, whose contexts can be
    limited to one key-exchange group (C{set_ecdh_curve}: for TLS 1.2 and,
    with OpenSSL 1.1.1 or later, for 1.3): an C{SSLObject} over memory
    BIOs, so the reactor carries its bytes. C{handshake} fires with the
    protocol version, or fails with the C{ssl.SSLError} (or the reason the
    connection ended first).
    """

    def __init__(self, tracker: Any, context: ssl.SSLContext) -> None:
        RawClient.__init__(self, tracker)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing)
        self.handshake: Deferred = Deferred()

    def connectionMade(self) -> None:
        RawClient.connectionMade(self)
        self._step()

    def dataReceived(self, data: bytes) -> None:
        self.incoming.write(data)
        self._step()

    def _step(self) -> None:
        if self.handshake.called:
            return
        error: Optional[ssl.SSLError] = None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as e:
            error = e
        pending = self.outgoing.read()
        if pending:
            self.transport.write(pending)
        if error is not None:
            self.transport.loseConnection()
            self.handshake.errback(error)
        elif self.tls.version() is not None:
            self.handshake.callback(self.tls.version())

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        RawClient.connectionLost(self, reason)
        if not self.handshake.called:
            self.handshake.errback(reason)


def stdlib_handshake(harness: Harness, port: int, version: ssl.TLSVersion, group: str) -> Deferred:
    """
    The handshake of a Python C{ssl} client speaking only C{version} and
    offering only the key-exchange group C{group} (it verifies nothing).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    context.set_ecdh_curve(group)
    client = StdlibTLSClient(harness.tracker, context)
    harness.clients.append(client)
    endpoint = TCP4ClientEndpoint(harness.reactor, "127.0.0.1", port, timeout=5)
    d = connectProtocol(endpoint, client)
    d.addCallback(lambda _: client.handshake)
    return d


#: the openssl command, or None (the tests that run it skip)
OPENSSL = shutil.which("openssl")


class ProcessOutput(ProcessProtocol):
    """
    A program's stdout and stderr together; its stdin is closed at once.
    C{ended} fires with the output when it has exited.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(self.output)


def s_client(harness: Harness, port: int, *args: str) -> Deferred:
    """
    The output of C{openssl s_client -brief} connecting to C{port} with
    C{args}; killed after 10 seconds.
    """
    assert OPENSSL is not None
    protocol = ProcessOutput()
    argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *args]
    process = harness.reactor.spawnProcess(protocol, OPENSSL, argv, env=None)
    timer = harness.reactor.callLater(10, process.signalProcess, "KILL")

    def done(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    return protocol.ended.addBoth(done)


def tls_origin(harness: Harness, creator: Any, name: str = "") -> Origin:
    """
    An L{Origin} speaking TLS with C{creator}'s settings.
    """
    origin = Origin(harness.tracker, name)
    port = harness.reactor.listenTCP(
        0, TLSMemoryBIOFactory(creator, False, origin), interface="127.0.0.1"
    )
    origin.listening = port
    origin.port = port.getHost().port
    harness.ports.append(port)
    harness.servers.append(origin)
    return origin


def get(client: RawClient, path: str = "/fixed", host: str = "site.example", headers: bytes = b"") -> Deferred:
    client.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + headers + b"\r\n")
    return client.response()


def capture(case: Any) -> List[Dict[str, Any]]:
    """
    Every log event during the test.
    """
    events: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def tls_events(events: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    return [e for e in events if e.get("tls_event") == kind]


def head(target: bytes, host: Optional[bytes] = b"site.example", method: bytes = b"GET") -> RequestHead:
    headers = [(b"Host", host)] if host is not None else []
    return RequestHead(method, target, b"1.1", headers, host)


# --- unit tests: no sockets --------------------------------------------------------------


class ServerTLSTests(SynchronousTestCase):
    """
    L{ServerTLS} loads one context per certificate and picks one by name.
    """

    def setUp(self) -> None:
        self.files = Files(self)
        self.ca = trustme.CA()

    def test_interface(self) -> None:
        """
        It is an C{IOpenSSLServerConnectionCreator}.
        """
        server = ServerTLS(tls_config(self.files.leaf(self.ca, "a.example")))
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, server))

    def test_select(self) -> None:
        """
        Exact names, then one-label wildcards, else the first certificate;
        names are matched case-insensitively and without a trailing dot.
        """
        server = ServerTLS(
            tls_config(
                self.files.leaf(self.ca, "a.example", "www.a.example"),
                self.files.leaf(self.ca, "b.example"),
                self.files.leaf(self.ca, "*.wild.example"),
                self.files.leaf(self.ca, "x.wild.example"),
            )
        )
        self.assertEqual(server.select(None), 0)
        self.assertEqual(server.select("www.a.example"), 0)
        self.assertEqual(server.select("B.Example."), 1)
        self.assertEqual(server.select("y.wild.example"), 2)
        self.assertEqual(server.select("x.wild.example"), 3)
        self.assertEqual(server.select("a.b.wild.example"), 0)
        self.assertEqual(server.select("wild.example"), 0)
        self.assertEqual(server.select("unknown.example"), 0)

    def test_common_name_without_san(self) -> None:
        """
        A certificate without subjectAltName is known by its CN.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        import datetime

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn-only.example")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        self.assertEqual(certificate_names(cert), ["cn-only.example"])

    def test_errors_name_the_file(self) -> None:
        """
        A missing file, a file that is no certificate and a key that does
        not match are L{TLSFileError}s naming the key and the index.
        """
        good = self.files.leaf(self.ca, "a.example")
        other = self.files.leaf(self.ca, "b.example")
        garbage = self.files.path("garbage.pem")
        with open(garbage, "wb") as f:
            f.write(b"not a certificate\n")
        cases = [
            ((self.files.path("missing.pem"), good[1]), "certificates[1].cert", "cannot read"),
            ((garbage, good[1]), "certificates[1].cert", "holds no PEM certificate"),
            ((good[0], garbage), "certificates[1].key", "holds no PEM private key"),
            ((good[0], other[1]), "certificates[1].cert", "does not match the private key"),
        ]
        for pair, where, text in cases:
            with self.assertRaises(TLSFileError) as caught:
                ServerTLS(tls_config(good, pair))
            self.assertEqual(caught.exception.where, where)
            self.assertIn(text, caught.exception.message)

    def test_ciphers_and_version(self) -> None:
        """
        A cipher string that selects nothing is refused.
        """
        pair = self.files.leaf(self.ca, "a.example")
        with self.assertRaises(TLSFileError) as caught:
            ServerTLS(tls_config(pair, ciphers="NOPE-NOTHING"))
        self.assertEqual(caught.exception.where, "ciphers")
        ServerTLS(tls_config(pair, min_version="1.3", ciphers="ECDHE+AESGCM"))

    def test_alpn_protocols(self) -> None:
        """
        HTTP/1.1 is offered; the list has room for h2.
        """
        self.assertEqual(ALPN_PROTOCOLS, (b"http/1.1",))

    def test_groups_not_restricted(self) -> None:
        """
        When the groups cannot be set (cryptography's binding lacks the
        function, or OpenSSL refuses the list), the listener still loads,
        with OpenSSL's default groups, and one warning per load says why.
        """
        cleared: List[bool] = []

        class Refusing:
            @staticmethod
            def SSL_CTX_set1_curves_list(context: Any, groups: bytes) -> int:
                return 0

            @staticmethod
            def ERR_clear_error() -> None:
                cleared.append(True)

        pairs = (self.files.leaf(self.ca, "a.example"), self.files.leaf(self.ca, "b.example"))
        for lib, why in [
            (object(), "lacks SSL_CTX_set1_curves_list"),
            (Refusing, "OpenSSL does not know them all"),
        ]:
            events = capture(self)
            self.patch(tls_module, "Binding", lambda: type("FakeBinding", (), {"lib": lib})())
            server = ServerTLS(tls_config(*pairs), "web")
            self.assertEqual(server.names, [["a.example"], ["b.example"]])
            [event] = tls_events(events, "groups_not_restricted")
            self.assertEqual(event["listener"], "web")
            self.assertEqual(event["groups"], "X25519:prime256v1:secp384r1")
            self.assertIn(why, event["why"])
        self.assertEqual(cleared, [True, True])


class ClientSubjectTests(SynchronousTestCase):
    """
    L{client_subject}: the verified certificate's subject, header-safe.
    """

    def test_no_certificate(self) -> None:
        class Transport:
            def getPeerCertificate(self) -> None:
                return None

        self.assertIsNone(client_subject(Transport()))
        self.assertIsNone(client_subject(object()))

    def test_escaped(self) -> None:
        """
        RFC 4514, with non-ASCII and control characters hex-escaped.
        """
        ca = trustme.CA()
        leaf = ca.issue_cert("c.example", common_name="Jörg\nX")
        cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())

        class Transport:
            def getPeerCertificate(self) -> Any:
                return cert

        subject = client_subject(Transport())
        assert subject is not None
        self.assertIn(b"CN=J\\c3\\b6rg\\0aX", subject)
        self.assertNotIn(b"\n", subject)


class RedirectRouterTests(SynchronousTestCase):
    """
    L{RedirectRouter} answers every request with a 308 to https.
    """

    def location(self, router: RedirectRouter, request: RequestHead) -> bytes:
        with self.assertRaises(Redirect) as caught:
            router.route(request)
        redirect = caught.exception
        self.assertEqual(redirect.status, 308)
        self.assertEqual(redirect.decision, "allow")
        return dict(redirect.headers)[b"Location"]

    def test_port(self) -> None:
        """
        The host without its port, the https port, the path and query.
        """
        router = RedirectRouter(8443)
        self.assertEqual(
            self.location(router, head(b"/a/b?c=d", b"site.example:8080")),
            b"https://site.example:8443/a/b?c=d",
        )

    def test_default_port(self) -> None:
        """
        Port 443 is not written.
        """
        self.assertEqual(
            self.location(RedirectRouter(443), head(b"/x")), b"https://site.example/x"
        )

    def test_absolute_and_ipv6(self) -> None:
        """
        An absolute-form target's authority is used; IPv6 keeps brackets.
        """
        router = RedirectRouter(443)
        self.assertEqual(
            self.location(router, head(b"http://other.example:81/p?q", b"ignored")),
            b"https://other.example/p?q",
        )
        self.assertEqual(self.location(router, head(b"/", b"[::1]:80")), b"https://[::1]/")
        self.assertEqual(
            self.location(router, head(b"http://a.example?x=1", None)), b"https://a.example/?x=1"
        )

    def test_refusals(self) -> None:
        """
        No host: 400; CONNECT: 405.
        """
        router = RedirectRouter(443)
        with self.assertRaises(BadRequest) as caught:
            router.route(head(b"/", None))
        self.assertEqual(caught.exception.status, 400)
        with self.assertRaises(BadRequest) as caught:
            router.route(head(b"a.example:443", b"a.example:443", b"CONNECT"))
        self.assertEqual(caught.exception.status, 405)


class BackendTLSTests(SynchronousTestCase):
    """
    L{BackendTLS} and the pool key of https servers.
    """

    def test_pool_key(self) -> None:
        """
        An https server's pool key carries its TLS settings; an http one's
        is the address alone, so the two never share connections.
        """
        plain = Server(ServerConfig(url="http://127.0.0.1:8000", scheme="http", host="127.0.0.1", port=8000))
        secure = Server(ServerConfig(url="https://127.0.0.1:8000", scheme="https", host="127.0.0.1", port=8000))
        self.assertEqual(plain.address, ("127.0.0.1", 8000))
        self.assertEqual(secure.address[:2], ("127.0.0.1", 8000))
        self.assertIsInstance(secure.address[2], BackendTLS)
        self.assertNotEqual(plain.address, secure.address)
        self.assertTrue(verifyObject(IOpenSSLClientConnectionCreator, secure.address[2]))

    def test_policy(self) -> None:
        """
        L{BackendTLSPolicy} gives the Agent of the health checks each
        server's own creator.
        """
        secure = Server(ServerConfig(url="https://Host.example:8443", scheme="https", host="host.example", port=8443))
        plain = Server(ServerConfig(url="http://127.0.0.1:80", scheme="http", host="127.0.0.1", port=80))
        policy = backend_tls_policy([secure, plain])
        assert policy is not None
        self.assertTrue(verifyObject(IPolicyForHTTPS, policy))
        self.assertIs(policy.creatorForNetloc(b"host.example", 8443), secure.address[2])
        self.assertIsNone(backend_tls_policy([plain]))

    def test_unverified(self) -> None:
        """
        C{verify = false} makes a creator that does not verify.
        """
        tls = BackendTLS(
            ServerConfig(url="https://a.example", scheme="https", host="a.example", port=443, verify=False)
        )
        self.assertEqual(tls.describe(), "TLS, not verified")


# --- configuration ---------------------------------------------------------------------


class ConfigTests(SynchronousTestCase):
    """
    The TLS keys of listeners and server entries, with the exact lines
    C{--check} prints.
    """

    def setUp(self) -> None:
        self.files = Files(self)
        self.ca = trustme.CA()
        self.pair = self.files.leaf(self.ca, "site.example")
        self.ca_file = self.files.ca(self.ca)

    def test_ssl_endpoint_speaks_our_tls(self) -> None:
        """
        An HTTP listener on a plain C{ssl:} endpoint string listens on
        C{tcp:} with the proxy's own TLS (the same protocols, ciphers and
        groups as a C{tls} table), its files as Twisted reads them.
        """
        cert, key = self.pair
        config = parse_config(
            self.config(self.listener(
                endpoint=f"ssl:8443:interface=127.0.0.1:backlog=9:privateKey={key}:certKey={cert}"
            )),
            "p.toml",
            self.files.dir,
        )
        [lconf] = config.listeners
        self.assertEqual(lconf.endpoint, "tcp:8443:interface=127.0.0.1:backlog=9")
        assert lconf.tls is not None
        self.assertEqual(
            [(c.cert, c.key) for c in lconf.tls.certificates],
            [(os.path.abspath(cert), os.path.abspath(key))],
        )

    def test_ssl_endpoint_with_other_options_left_to_twisted(self) -> None:
        """
        An C{ssl:} endpoint with options only Twisted's TLS knows
        (C{extraCertChain}, C{dhParameters}, ...) stays as it is.
        """
        cert, key = self.pair
        endpoint = f"ssl:8443:privateKey={key}:certKey={cert}:extraCertChain={cert}"
        config = parse_config(
            self.config(self.listener(endpoint=endpoint)), "p.toml", self.files.dir
        )
        [lconf] = config.listeners
        self.assertIsNone(lconf.tls)
        self.assertTrue(lconf.endpoint.startswith("ssl:8443:"))

    def listener(self, **keys: Any) -> Dict[str, Any]:
        table: Dict[str, Any] = {
            "name": "edge",
            "kind": "reverse",
            "endpoint": "tcp:8443",
            "route": ROUTES,
        }
        table.update(keys)
        return table

    def config(self, listener: Dict[str, Any], server: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return {
            "listener": [listener],
            "backend": {"web": {"servers": [server or {"url": "http://127.0.0.1:1"}]}},
        }

    def errors(self, config: Dict[str, Any]) -> List[str]:
        try:
            parse_config(config, "p.toml", self.files.dir)
        except ConfigError as e:
            return e.lines()
        raise AssertionError("the configuration was accepted")

    def test_valid(self) -> None:
        """
        Every key, parsed into a L{TLSConfig}; C{client_ca} alone means
        C{verify_client = "required"}; relative paths are resolved against
        the file's folder.
        """
        cert, key = (os.path.basename(p) for p in self.pair)
        config = parse_config(
            self.config(
                self.listener(
                    tls={
                        "certificates": [{"cert": cert, "key": key}],
                        "min_version": "1.3",
                        "ciphers": "ECDHE+AESGCM",
                        "client_ca": self.ca_file,
                        "client_subject_header": "X-Subject",
                    }
                ),
                {
                    "url": "https://127.0.0.1:9443",
                    "ca": self.ca_file,
                    "server_name": "Backend.Example",
                    "client_cert": self.pair[0],
                    "client_key": self.pair[1],
                },
            ),
            "p.toml",
            self.files.dir,
        )
        tls = config.listeners[0].tls
        self.assertEqual(
            tls,
            TLSConfig(
                certificates=(CertificateConfig(cert=self.pair[0], key=self.pair[1]),),
                min_version="1.3",
                ciphers="ECDHE+AESGCM",
                client_ca=self.ca_file,
                verify_client="required",
                client_subject_header="X-Subject",
            ),
        )
        server = config.backends["web"].servers[0]
        self.assertEqual(
            (server.ca, server.server_name, server.verify, server.client_cert, server.client_key),
            (self.ca_file, "backend.example", True, self.pair[0], self.pair[1]),
        )

    def test_bad_pair(self) -> None:
        """
        A certificate and a key that do not belong together, or a file
        that is not PEM, is a --check error naming the entry.
        """
        other = self.files.leaf(self.ca, "other.example")
        lines = self.errors(
            self.config(
                self.listener(
                    tls={
                        "certificates": [
                            {"cert": self.pair[0], "key": other[1]},
                            {"cert": self.ca_file, "key": self.pair[1]},
                            {"cert": self.pair[1], "key": self.pair[1]},
                            {"cert": "nope.pem", "key": self.pair[1], "extra": 1},
                        ]
                    }
                )
            )
        )
        self.assertEqual(len(lines), 5, lines)
        self.assertTrue(
            lines[0].startswith("p.toml: listener[0].tls.certificates[0].cert: the certificate in "),
            lines[0],
        )
        self.assertIn("does not match the private key in", lines[0])
        self.assertTrue(lines[1].startswith("p.toml: listener[0].tls.certificates[1].cert: "), lines[1])
        self.assertIn("does not match", lines[1])
        self.assertEqual(
            lines[2],
            f"p.toml: listener[0].tls.certificates[2].cert: {self.pair[1]} holds no PEM certificate",
        )
        self.assertEqual(
            lines[3],
            f"p.toml: listener[0].tls.certificates[3].cert: file 'nope.pem' not found"
            f" ({self.files.path('nope.pem')})",
        )
        self.assertEqual(lines[4], "p.toml: listener[0].tls.certificates[3].extra: unknown key")

    def test_values(self) -> None:
        """
        C{min_version}, C{verify_client}, C{client_subject_header} and the
        table's own keys are checked.
        """
        self.assertEqual(
            self.errors(
                self.config(
                    self.listener(
                        tls={
                            "certificates": [],
                            "min_version": 1.2,
                            "verify_client": "sometimes",
                            "client_subject_header": "Bad Header",
                            "sni": True,
                        }
                    )
                )
            ),
            [
                "p.toml: listener[0].tls.certificates: must not be empty"
                " (the first certificate is the default)",
                'p.toml: listener[0].tls.min_version: must be a string ("1.2" or "1.3"), not a float',
                "p.toml: listener[0].tls.verify_client: unknown verify_client 'sometimes'"
                ' (expected "required" or "optional")',
                "p.toml: listener[0].tls.client_subject_header: 'Bad Header' is not a valid"
                " header name",
                "p.toml: listener[0].tls.sni: unknown key",
                "p.toml: listener[0].tls.verify_client: needs client_ca (the CA file client"
                " certificates are verified against)",
                "p.toml: listener[0].tls.client_subject_header: needs client_ca (the CA file"
                " client certificates are verified against)",
            ],
        )
        self.assertEqual(
            self.errors(
                self.config(
                    self.listener(
                        tls={"certificates": [cert_entry(self.pair)], "min_version": "1.1",
                             "ciphers": "NOPE"}
                    )
                )
            ),
            [
                "p.toml: listener[0].tls.min_version: unknown TLS version '1.1'"
                ' (expected "1.2" or "1.3")',
                "p.toml: listener[0].tls.ciphers: 'NOPE' selects no cipher OpenSSL knows"
                " (no cipher match)",
            ],
        )

    def test_ssl_endpoint_and_redirect(self) -> None:
        """
        C{tls} cannot go with an C{ssl:} endpoint; C{redirect_to_https} is a
        port or a boolean, only on a plain listener, which has no routes.
        """
        self.assertEqual(
            self.errors(
                self.config(
                    self.listener(
                        endpoint=f"ssl:8443:privateKey={self.pair[1]}:certKey={self.pair[0]}",
                        tls={"certificates": [cert_entry(self.pair)]},
                    )
                )
            ),
            [
                "p.toml: listener[0].tls: cannot be combined with an ssl: endpoint (use a tcp:"
                " endpoint with tls, or an ssl: endpoint alone)"
            ],
        )
        self.assertEqual(
            self.errors(
                self.config(
                    {"name": "a", "kind": "forward", "endpoint": "tcp:80", "redirect_to_https": "yes",
                     "parents": []}
                )
            ),
            ["p.toml: listener[0].redirect_to_https: must be a port number or true/false, not a string"],
        )
        self.assertEqual(
            self.errors(
                self.config(
                    {"name": "a", "kind": "forward", "endpoint": "tcp:80", "redirect_to_https": 0,
                     "filters": []}
                )
            ),
            ["p.toml: listener[0].redirect_to_https: port 0 is out of range 1-65535"],
        )
        self.assertEqual(
            self.errors(
                self.config(
                    {"name": "a", "kind": "forward", "endpoint": "tcp:80", "redirect_to_https": True,
                     "parents": []}
                )
            ),
            [
                "p.toml: listener[0].parents: not used on a listener with redirect_to_https"
                " (every request is redirected)"
            ],
        )
        config = parse_config(
            self.config({"name": "a", "kind": "reverse", "endpoint": "tcp:80", "redirect_to_https": True}),
            "p.toml",
            self.files.dir,
        )
        self.assertEqual(config.listeners[0].redirect_to_https, 443)
        config = parse_config(
            self.config(self.listener(redirect_to_https=False)), "p.toml", self.files.dir
        )
        self.assertIsNone(config.listeners[0].redirect_to_https)

    def test_server_keys(self) -> None:
        """
        Server TLS keys: files that load, a host name, both halves of a
        client certificate, and only on https:// URLs.
        """
        garbage = self.files.path("garbage.pem")
        with open(garbage, "wb") as f:
            f.write(b"junk")
        lines = self.errors(
            {
                "listener": [self.listener()],
                "backend": {
                    "web": {
                        "servers": [
                            {"url": "http://127.0.0.1:1", "ca": self.ca_file},
                            {"url": "https://127.0.0.1:2", "ca": garbage, "server_name": "*.x"},
                            {"url": "https://127.0.0.1:3", "client_cert": self.pair[0]},
                            {"url": "https://127.0.0.1:4", "verify": "no"},
                            {"url": "https://127.0.0.1:5", "ca": self.ca_file, "verify": False},
                        ]
                    }
                },
            }
        )
        self.assertEqual(
            lines,
            [
                "p.toml: backend.web.servers[0].ca: only for https:// servers (this one is http://)",
                f"p.toml: backend.web.servers[1].ca: {garbage} holds no PEM certificate",
                "p.toml: backend.web.servers[1].server_name: '*.x': a server name cannot be a wildcard",
                "p.toml: backend.web.servers[2].client_key: required with client_cert",
                "p.toml: backend.web.servers[3].verify: must be true or false, not a string",
                "p.toml: backend.web.servers[4].ca: has no effect with verify = false",
            ],
        )


# --- listeners: real handshakes --------------------------------------------------------------


class _Recorder(Protocol):
    """
    The protocol behind a L{ListenerTLS} in a test: what it received, and
    why its connection ended.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Optional[Failure] = None
        self.answer: Optional[bytes] = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.answer is not None:
            self.transport.write(self.answer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class _Spy:
    """
    A pyOpenSSL connection whose C{sendall} calls are recorded.
    """

    def __init__(self, connection: Any, sent: List[bytes]) -> None:
        self.connection = connection
        self.sent = sent

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)
        self.connection.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)


class ListenerTLSLayerTests(SynchronousTestCase):
    """
    L{ListenerTLS}, the listeners' TLS layer, with a pyOpenSSL client over
    memory BIOs and a L{StringTransport}: no sockets.
    """

    def setUp(self) -> None:
        files = Files(self)
        self.ca = trustme.CA()
        self.creator = ServerTLS(tls_config(files.leaf(self.ca, "site.example")), "t")
        self.inner = _Recorder()
        factory = ListenerTLSFactory(self.creator, Factory.forProtocol(lambda: self.inner))
        self.layer = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.layer.makeConnection(self.transport)
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_alpn_protos([b"http/1.1"])
        self.client = SSL.Connection(ctx, None)
        self.client.set_tlsext_host_name(b"site.example")
        self.client.set_connect_state()

    def pump(self) -> None:
        """
        Move bytes both ways until neither side has any.
        """
        for _ in range(20):
            moved = False
            try:
                self.client.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                out = self.client.bio_read(1 << 20)
            except SSL.WantReadError:
                out = b""
            if out:
                moved = True
                self.layer.dataReceived(out)
            back = self.transport.value()
            if back:
                moved = True
                self.transport.clear()
                self.client.bio_write(back)
            if not moved:
                return

    def client_read(self) -> bytes:
        data = b""
        while True:
            try:
                data += self.client.recv(65536)
            except SSL.WantReadError:
                return data

    def test_round_trip(self) -> None:
        """
        After the handshake (SNI and ALPN as ServerTLS set them), records
        are decrypted for the protocol and its writes encrypted for the
        client.
        """
        self.pump()
        self.assertEqual(self.client.get_alpn_proto_negotiated(), b"http/1.1")
        self.inner.answer = b"pong"
        self.client.sendall(b"ping")
        self.pump()
        self.assertEqual(self.inner.received, b"ping")
        self.assertEqual(self.client_read(), b"pong")

    def test_empty_pieces(self) -> None:
        """
        Empty writes and empty pieces of a sequence (before and after the
        handshake) send nothing of their own; the rest arrives in order.
        """
        self.layer.writeSequence([b"", b"early", b""])
        self.pump()
        self.layer.write(b"")
        self.layer.writeSequence([b"", b"a", b"", b"b"])
        self.layer.writeSequence(iter([b"c", b""]))
        self.layer.writeSequence([b"x" * 20000, b"", b"y"])
        self.pump()
        self.assertEqual(self.client_read(), b"earlyabc" + b"x" * 20000 + b"y")

    def test_direct(self) -> None:
        """
        This pyOpenSSL lets the layer read and write records by direct
        calls into OpenSSL.
        """
        self.assertIsNotNone(self.layer._ssl)

    def test_large_writes(self) -> None:
        """
        Writes over a record (and over the layer's copy buffer) arrive
        whole, in order.
        """
        self.pump()
        big = bytes(range(256)) * 1024  # 256 KiB
        self.layer.write(b"head")
        self.layer.writeSequence([big, b"tail"])
        data = b""
        for _ in range(50):
            self.pump()
            data += self.client_read()
            if len(data) >= len(big) + 8:
                break
        self.assertEqual(data, b"head" + big + b"tail")

    def test_partial_direct_write(self) -> None:
        """
        A direct write that OpenSSL took in part: pyOpenSSL writes the
        rest, in order.
        """
        self.pump()
        write = tls_module._DIRECT_SSL_WRITE

        def partial(ssl: Any, data: bytes, size: int) -> int:
            return int(write(ssl, data, min(size, 5000)))

        self.patch(tls_module, "_DIRECT_SSL_WRITE", partial)
        self.layer.writeSequence([b"a" * 10000, b"b" * 20000])
        self.pump()
        self.assertEqual(self.client_read(), b"a" * 10000 + b"b" * 20000)

    def test_client_close_notify(self) -> None:
        """
        The client's close_notify (OpenSSL's error for a read, handed to
        pyOpenSSL) closes the connection after ours.
        """
        self.pump()
        try:
            self.client.shutdown()
        except SSL.Error:
            pass
        self.layer.dataReceived(self.client.bio_read(1 << 20))
        self.assertTrue(self.transport.disconnecting)

    def test_bad_record(self) -> None:
        """
        Garbage where a record belongs: the protocol loses the connection
        with OpenSSL's error as the reason.
        """
        self.pump()
        self.layer.dataReceived(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
        self.assertTrue(self.transport.disconnecting)
        self.layer.connectionLost(Failure(Exception("gone")))
        assert self.inner.lost is not None
        self.assertIsInstance(self.inner.lost.value, SSL.Error)

    def test_bio_fill(self) -> None:
        """
        The layer knows what its BIOs hold without asking OpenSSL to fail
        (this pyOpenSSL lets it).
        """
        self.pump()
        self.client.sendall(b"ping")
        wire = self.client.bio_read(1 << 20)
        into = self.layer._tls._into_ssl
        self.layer._tls.bio_write(wire[:-1])
        self.assertEqual(tls_module._bio_fill(into), len(wire) - 1)
        self.layer.dataReceived(wire[-1:])
        self.assertEqual(self.inner.received, b"ping")
        self.assertEqual(tls_module._bio_fill(into), 0)
        self.assertEqual(tls_module._bio_fill(self.layer._tls._from_ssl), 0)

    def test_records_in_one_read(self) -> None:
        """
        Several records (and a part of the next) in one TCP read: the whole
        ones are handed on at once, the part when the rest comes.
        """
        self.pump()
        for piece in (b"one ", b"two ", b"three"):
            self.client.sendall(piece)
        wire = self.client.bio_read(1 << 20)
        self.layer.dataReceived(wire[:-3])
        self.assertEqual(self.inner.received, b"one two ")
        self.layer.dataReceived(wire[-3:])
        self.assertEqual(self.inner.received, b"one two three")

    def test_full_record_then_more(self) -> None:
        """
        A record of the largest plaintext, then more, in one read: all of it
        is handed on.
        """
        self.pump()
        self.client.sendall(b"a" * 16384 + b"b" * 10)
        self.layer.dataReceived(self.client.bio_read(1 << 20))
        self.assertEqual(self.inner.received, b"a" * 16384 + b"b" * 10)

    def test_small_pieces_one_record(self) -> None:
        """
        Pieces written together that fit in one record go as one record
        (a head and a small body); larger ones as they are.
        """
        self.pump()
        sent: List[bytes] = []
        if self.layer._ssl is not None:
            # (records written by direct calls into OpenSSL)
            write = tls_module._DIRECT_SSL_WRITE

            def spy(ssl: Any, data: bytes, size: int) -> int:
                sent.append(data)
                return write(ssl, data, size)

            self.patch(tls_module, "_DIRECT_SSL_WRITE", spy)
        else:
            self.layer._tls = _Spy(self.layer._tls, sent)
        self.layer.writeSequence([b"head ", b"body"])
        self.layer.writeSequence([b"x" * 10000, b"y" * 10000])
        if isinstance(self.layer._tls, _Spy):
            self.layer._tls = self.layer._tls.connection
        self.assertEqual(sent, [b"head body", b"x" * 10000, b"y" * 10000])
        self.pump()
        self.assertEqual(self.client_read(), b"head body" + b"x" * 10000 + b"y" * 10000)

    def test_early_write(self) -> None:
        """
        Bytes written before the handshake ended wait for it.
        """
        self.layer.write(b"early")
        self.assertEqual(self.transport.value(), b"")
        self.pump()
        self.assertEqual(self.client_read(), b"early")

    def test_client_close_notify(self) -> None:
        """
        The client's close_notify: ours goes back and the connection closes
        (the protocol hears of it from the TCP connection).
        """
        self.pump()
        self.client.shutdown()
        self.pump()
        self.assertTrue(self.transport.disconnecting)
        with self.assertRaises(SSL.ZeroReturnError):
            self.client.recv(1)

    def test_lose_connection(self) -> None:
        """
        C{loseConnection} sends close_notify, then closes; later writes are
        dropped.
        """
        self.pump()
        self.layer.loseConnection()
        self.assertTrue(self.transport.disconnecting)
        self.layer.write(b"late")
        self.pump()
        with self.assertRaises(SSL.ZeroReturnError):
            self.client.recv(1)

    def test_half_close(self) -> None:
        """
        C{loseWriteConnection} sends close_notify and reading goes on (a
        tunnel whose other side finished).
        """
        self.pump()
        self.layer.loseWriteConnection()
        self.assertFalse(self.transport.disconnecting)
        self.pump()
        with self.assertRaises(SSL.ZeroReturnError):
            self.client.recv(1)
        self.client.sendall(b"more")
        self.pump()
        self.assertEqual(self.inner.received, b"more")

    def test_tls_error(self) -> None:
        """
        Bytes that are not TLS: the connection closes and the protocol's
        connectionLost gets OpenSSL's error as the reason.
        """
        self.layer.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.layer.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.inner.lost)
        self.assertTrue(self.inner.lost.check(SSL.Error))

    def test_producer_goes_to_tcp(self) -> None:
        """
        The producer the proxy registers is the TCP connection's: its
        buffer pauses it.
        """
        producer = object()
        self.layer.registerProducer(producer, True)
        self.assertIs(self.transport.producer, producer)
        self.layer.unregisterProducer()
        self.assertIsNone(self.transport.producer)

    def test_peer_certificate(self) -> None:
        """
        Without a client certificate, the subject is None.
        """
        self.pump()
        self.assertIsNone(client_subject(self.layer))


class ListenerTLSLayerFallbackTests(ListenerTLSLayerTests):
    """
    The same where pyOpenSSL does not let the layer see its BIOs: reads
    and writes end as in Twisted's layer, at WantReadError.
    """

    def setUp(self) -> None:
        self.patch(tls_module, "_BIO_MEM_DATA", None)
        ListenerTLSLayerTests.setUp(self)

    def test_bio_fill(self) -> None:
        """
        Unknown fills are -1.
        """
        self.pump()
        self.assertEqual(tls_module._bio_fill(self.layer._tls._into_ssl), -1)

    def test_direct(self) -> None:
        """
        Without the BIOs' fill, records go through pyOpenSSL's methods.
        """
        self.assertIsNone(self.layer._ssl)


class ListenerTLSLayerPyOpenSSLTests(ListenerTLSLayerTests):
    """
    The same where pyOpenSSL's binding cannot be called directly: records
    go through pyOpenSSL's public methods.
    """

    def setUp(self) -> None:
        self.patch(tls_module, "_DIRECT", None)
        ListenerTLSLayerTests.setUp(self)

    def test_direct(self) -> None:
        """
        The layer does not call OpenSSL itself.
        """
        self.assertIsNone(self.layer._ssl)


class ListenerTLSTests(TestCase):
    """
    A reverse listener with C{tls}: SNI, versions, ALPN, the https scheme.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.files = Files(self)
        self.ca = trustme.CA()
        self.ca_file = self.files.ca(self.ca)
        self.origin = self.harness.origin()

    def start(self, *pairs: Tuple[str, str], **tls: Any) -> Any:
        tls["certificates"] = [cert_entry(p) for p in pairs]
        return self.harness.reverse(
            ROUTES, {"web": {"servers": servers(self.origin)}}, {"tls": tls}
        )

    @inlineCallbacks
    def test_sni(self) -> Any:
        """
        Each name gets its certificate; no SNI and an unknown name get the
        first.
        """
        proxy = self.start(
            self.files.leaf(self.ca, "a.example"), self.files.leaf(self.ca, "b.example")
        )
        for sni, expected in [
            ("a.example", ["a.example"]),
            ("b.example", ["b.example"]),
            (None, ["a.example"]),
            ("unknown.example", ["a.example"]),
        ]:
            client = yield tls_connect(self.harness, proxy.port, ClientTLS(sni, self.ca_file))
            self.assertEqual(client.peer_names(), expected, sni)
            client.transport.loseConnection()
            yield client.closed()

    @inlineCallbacks
    def test_wildcard(self) -> Any:
        """
        A wildcard certificate serves one label below its domain.
        """
        proxy = self.start(
            self.files.leaf(self.ca, "default.example"), self.files.leaf(self.ca, "*.wild.example")
        )
        client = yield tls_connect(self.harness, proxy.port, ClientTLS("x.wild.example", self.ca_file))
        self.assertEqual(client.peer_names(), ["*.wild.example"])
        client2 = yield tls_connect(self.harness, proxy.port, ClientTLS("a.b.wild.example", self.ca_file))
        self.assertEqual(client2.peer_names(), ["default.example"])

    @inlineCallbacks
    def test_chain(self) -> Any:
        """
        A certificate file holding the chain sends it: a client trusting
        only the root verifies a leaf issued by an intermediate.
        """
        intermediate = self.ca.create_child_ca()
        proxy = self.start(self.files.leaf(intermediate, "a.example"))
        client = yield tls_connect(self.harness, proxy.port, ClientTLS("a.example", self.ca_file))
        self.assertEqual(client.peer_names(), ["a.example"])

    @inlineCallbacks
    def test_below_tls12_refused(self) -> Any:
        """
        A client that speaks at most TLS 1.1 is refused (the same client
        allowed TLS 1.2 gets in).
        """
        proxy = self.start(self.files.leaf(self.ca, "a.example"))
        failure = yield self.assertFailure(
            tls_connect(self.harness, proxy.port, ClientTLS(max_version=SSL.TLS1_1_VERSION, legacy=True)),
            SSL.Error,
        )
        self.assertIn("protocol version", str(failure))
        client = yield tls_connect(
            self.harness, proxy.port, ClientTLS(max_version=SSL.TLS1_2_VERSION, legacy=True)
        )
        self.assertEqual(client.transport.getHandle().get_protocol_version_name(), "TLSv1.2")

    @inlineCallbacks
    def test_min_version_13(self) -> Any:
        """
        C{min_version = "1.3"} refuses a TLS 1.2 client.
        """
        proxy = self.start(self.files.leaf(self.ca, "a.example"), min_version="1.3")
        yield self.assertFailure(
            tls_connect(self.harness, proxy.port, ClientTLS(max_version=SSL.TLS1_2_VERSION)),
            SSL.Error,
        )
        client = yield tls_connect(self.harness, proxy.port, ClientTLS())
        self.assertEqual(client.transport.getHandle().get_protocol_version_name(), "TLSv1.3")

    @inlineCallbacks
    def test_tls12_cipher(self) -> Any:
        """
        Over TLS 1.2 the cipher is an ECDHE AEAD one, even when the client
        prefers another.
        """
        proxy = self.start(self.files.leaf(self.ca, "a.example"))
        creator = ClientTLS(max_version=SSL.TLS1_2_VERSION)
        creator.ctx.set_cipher_list(b"AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
        client = yield tls_connect(self.harness, proxy.port, creator)
        self.assertEqual(client.transport.getHandle().get_cipher_name(), "ECDHE-ECDSA-AES128-GCM-SHA256")

    @inlineCallbacks
    def test_alpn(self) -> Any:
        """
        ALPN picks http/1.1 from what the client offers; a client offering
        only h2 still connects, without ALPN.
        """
        proxy = self.start(self.files.leaf(self.ca, "a.example"))
        client = yield tls_connect(self.harness, proxy.port, ClientTLS(alpn=(b"h2", b"http/1.1")))
        self.assertEqual(client.alpn, b"http/1.1")
        client2 = yield tls_connect(self.harness, proxy.port, ClientTLS(alpn=(b"h2",)))
        self.assertIsNone(client2.alpn)

    @inlineCallbacks
    def test_forwarded_proto(self) -> Any:
        """
        A request over TLS reaches the backend with X-Forwarded-Proto:
        https; a client-sent X-Client-Subject is removed.
        """
        proxy = self.start(self.files.leaf(self.ca, "site.example"))
        client = yield tls_connect(self.harness, proxy.port, ClientTLS("site.example"))
        response = yield get(client, "/fixed", headers=b"X-Client-Subject: CN=admin\r\n")
        self.assertEqual(response.status, 200)
        request = self.origin.user_requests()[-1]
        self.assertEqual(request.values(b"x-forwarded-proto"), [b"https"])
        self.assertEqual(request.values(b"x-client-subject"), [])

    @inlineCallbacks
    def test_close(self) -> Any:
        """
        C{Connection: close} over TLS: the proxy closes the connection after
        the response (close_notify, then the TCP connection), as it does
        without TLS.
        """
        proxy = self.start(self.files.leaf(self.ca, "site.example"))
        client = yield tls_connect(self.harness, proxy.port, ClientTLS("site.example"))
        response = yield get(client, headers=b"Connection: close\r\n")
        self.assertEqual(response.status, 200)
        rest = yield client.closed()
        self.assertEqual(rest, b"")

    @inlineCallbacks
    def test_idle_timeout(self) -> Any:
        """
        An idle keep-alive TLS connection is closed after C{idle_timeout}.
        """
        tls = {"certificates": [cert_entry(self.files.leaf(self.ca, "site.example"))]}
        proxy = self.harness.reverse(
            ROUTES, {"web": {"servers": servers(self.origin)}}, {"tls": tls}, {"idle_timeout": 0.2}
        )
        client = yield tls_connect(self.harness, proxy.port, ClientTLS("site.example"))
        response = yield get(client)
        self.assertEqual(response.status, 200)
        yield client.closed()

    @inlineCallbacks
    def test_connect_tunnel(self) -> Any:
        """
        CONNECT through a forward listener over TLS: the tunnel carries
        bytes both ways, and ends when the client goes.
        """
        echo = self.harness.echo_server()
        proxy = self.harness.proxy(
            {
                "tls": {"certificates": [cert_entry(self.files.leaf(self.ca, "proxy.example"))]},
                "connect_ports": [echo.port],
            }
        )
        client = yield tls_connect(self.harness, proxy.port, ClientTLS("proxy.example"))
        client.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (echo.port, echo.port))
        established = yield client.until(b"\r\n\r\n")
        self.assertTrue(established.startswith(b"HTTP/1.1 200 "), established)
        client.send(b"ping")
        echoed = yield client.nbytes(4)
        self.assertEqual(echoed, b"ping")
        client.transport.loseConnection()
        yield client.closed()

    @inlineCallbacks
    def test_forward_listener(self) -> Any:
        """
        A forward listener over TLS (an HTTPS proxy) serves absolute-form
        requests.
        """
        proxy = self.harness.proxy(
            {"tls": {"certificates": [cert_entry(self.files.leaf(self.ca, "proxy.example"))]}}
        )
        client = yield tls_connect(self.harness, proxy.port, ClientTLS("proxy.example"))
        client.send(b"GET " + self.origin.url("/fixed") + b" HTTP/1.1\r\nHost: " + self.origin.authority + b"\r\n\r\n")
        response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"hello, world\n"))

    @inlineCallbacks
    def test_ssl_endpoint(self) -> Any:
        """
        A single certificate through an C{ssl:} endpoint string still works,
        and the backend hears https.
        """
        cert, key = self.files.leaf(self.ca, "site.example")
        proxy = self.harness.reverse(
            ROUTES,
            {"web": {"servers": servers(self.origin)}},
            {"endpoint": f"ssl:0:interface=127.0.0.1:certKey={cert}:privateKey={key}"},
        )
        # a client offering h2 too (as curl and browsers do) gets http/1.1
        client = yield tls_connect(
            self.harness, proxy.port, ClientTLS("site.example", alpn=(b"h2", b"http/1.1"))
        )
        self.assertEqual(client.alpn, b"http/1.1")
        response = yield get(client)
        self.assertEqual(response.status, 200)
        self.assertEqual(self.origin.user_requests()[-1].values(b"x-forwarded-proto"), [b"https"])


class KeyExchangeGroupTests(TestCase):
    """
    A listener offers only the key-exchange groups of Mozilla's
    "intermediate" profile, X25519, P-256 and P-384, preferring them in
    that order, over TLS 1.2 and 1.3.

    Its certificate is RSA: over TLS 1.2 a client must also list the curve
    of an ECDSA certificate among its groups.
    """

    VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.files = Files(self)
        ca = trustme.CA()
        pair = self.files.write(ca.issue_cert("a.example", key_type=trustme.KeyType.RSA))
        origin = self.harness.origin()
        self.proxy = self.harness.reverse(
            ROUTES, {"web": {"servers": servers(origin)}}, {"tls": {"certificates": [cert_entry(pair)]}}
        )

    def test_groups(self) -> None:
        """
        The groups, in order, by OpenSSL's names.
        """
        self.assertEqual(SERVER_GROUPS, ("X25519", "prime256v1", "secp384r1"))

    @inlineCallbacks
    def test_offered_groups(self) -> Any:
        """
        A client offering only X25519, only P-256 or only P-384 gets in,
        with TLS 1.2 and with 1.3.
        """
        for version in self.VERSIONS:
            for group in ("X25519", "prime256v1", "secp384r1"):
                got = yield stdlib_handshake(self.harness, self.proxy.port, version, group)
                self.assertEqual(got, version.name.replace("_", "."), group)

    @inlineCallbacks
    def test_other_groups_refused(self) -> Any:
        """
        A client offering only P-521 or only X448 is refused (handshake
        failure), with TLS 1.2 and with 1.3.
        """
        for version in self.VERSIONS:
            for group in ("secp521r1", "X448"):
                failure = yield self.assertFailure(
                    stdlib_handshake(self.harness, self.proxy.port, version, group), ssl.SSLError
                )
                self.assertIn("HANDSHAKE_FAILURE", str(failure), (version, group))

    @inlineCallbacks
    def test_server_preference(self) -> Any:
        """
        A client offering every group, X25519 last, gets X25519 (with TLS
        1.3 by a HelloRetryRequest, its key share being X448's); one
        offering P-384 and P-256 gets P-256 over TLS 1.2.
        """
        if OPENSSL is None:
            raise SkipTest("no openssl command")
        for args, expected in [
            (("-tls1_2", "-groups", "X448:P-521:P-384:P-256:X25519"), b"Server Temp Key: X25519"),
            (("-tls1_3", "-groups", "X448:P-521:P-384:P-256:X25519"), b"Server Temp Key: X25519"),
            (("-tls1_2", "-groups", "P-384:P-256"), b"Server Temp Key: ECDH, prime256v1"),
        ]:
            output = yield s_client(self.harness, self.proxy.port, *args)
            self.assertIn(expected, output, args)


class ClientCertificateTests(TestCase):
    """
    Listeners verifying client certificates (C{client_ca}).
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.files = Files(self)
        self.ca = trustme.CA()
        self.client_ca = trustme.CA()
        self.origin = self.harness.origin()
        self.server_pair = self.files.leaf(self.ca, "site.example")
        self.client_pair = self.files.leaf(self.client_ca, "alice.example", common_name="alice")

    def start(self, **tls: Any) -> Any:
        tls["certificates"] = [cert_entry(self.server_pair)]
        tls["client_ca"] = self.files.ca(self.client_ca)
        return self.harness.reverse(ROUTES, {"web": {"servers": servers(self.origin)}}, {"tls": tls})

    @inlineCallbacks
    def test_required(self) -> Any:
        """
        C{verify_client = "required"}: without a certificate the handshake
        fails (with TLS 1.3 the client learns it right after its side of
        the handshake: no response ever comes); with one, requests pass.
        """
        proxy = self.start(verify_client="required")
        try:
            client = yield tls_connect(self.harness, proxy.port, ClientTLS("site.example"))
        except SSL.Error as e:
            self.assertIn("certificate", str(e))
        else:
            client.send(b"GET / HTTP/1.1\r\nHost: site.example\r\n\r\n")
            rest = yield client.closed()
            self.assertEqual(rest, b"")
            self.assertTrue(client.reason.check(SSL.Error), client.reason)
            self.assertIn("certificate required", str(client.reason.value))
        self.assertEqual(self.origin.user_requests(), [])
        client = yield tls_connect(
            self.harness, proxy.port, ClientTLS("site.example", client=self.client_pair)
        )
        response = yield get(client)
        self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_untrusted_client_certificate(self) -> Any:
        """
        A certificate from another CA is refused, even when optional.
        """
        proxy = self.start(verify_client="optional")
        stranger = self.files.leaf(trustme.CA(), "mallory.example", common_name="mallory")
        try:
            client = yield tls_connect(self.harness, proxy.port, ClientTLS("site.example", client=stranger))
        except SSL.Error:
            pass
        else:
            client.send(b"GET / HTTP/1.1\r\nHost: site.example\r\n\r\n")
            rest = yield client.closed()
            self.assertEqual(rest, b"")
        self.assertEqual(self.origin.user_requests(), [])

    @inlineCallbacks
    def test_optional_subject(self) -> Any:
        """
        C{verify_client = "optional"}: the subject header is present only
        with a verified certificate; a client-sent one never passes.
        """
        proxy = self.start(verify_client="optional", client_subject_header="X-Subject")
        spoof = b"X-Subject: CN=admin\r\nx-subject: CN=root\r\n"
        anonymous = yield tls_connect(self.harness, proxy.port, ClientTLS("site.example"))
        response = yield get(anonymous, headers=spoof)
        self.assertEqual(response.status, 200)
        self.assertEqual(self.origin.user_requests()[-1].values(b"x-subject"), [])
        alice = yield tls_connect(
            self.harness, proxy.port, ClientTLS("site.example", client=self.client_pair)
        )
        for _ in range(2):  # read once per connection, sent with every request
            response = yield get(alice, headers=spoof)
            self.assertEqual(response.status, 200)
            subject = self.origin.user_requests()[-1].values(b"x-subject")
            self.assertEqual(len(subject), 1, subject)
            self.assertTrue(subject[0].startswith(b"CN=alice,"), subject)


class ReloadTests(TestCase):
    """
    Re-reading certificates: new handshakes use them, established
    connections keep theirs, broken files change nothing.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.files = Files(self)
        self.ca = trustme.CA()
        self.ca_file = self.files.ca(self.ca)
        self.origin = self.harness.origin()
        self.pair = self.files.leaf(self.ca, "old.example")
        self.proxy = self.harness.reverse(
            ROUTES, {"web": {"servers": servers(self.origin)}}, {"tls": {"certificates": [cert_entry(self.pair)]}}
        )

    def connect(self) -> Deferred:
        return tls_connect(self.harness, self.proxy.port, ClientTLS("site.example", self.ca_file))

    @inlineCallbacks
    def test_reload(self) -> Any:
        """
        After L{ProxyService.reload_certificates} a new connection gets the
        new certificate; one made before still works.
        """
        events = capture(self)
        old = yield self.connect()
        self.assertEqual(old.peer_names(), ["old.example"])
        response = yield get(old)
        self.assertEqual(response.status, 200)
        self.files.write(self.ca.issue_cert("new.example"), *self.pair)
        self.assertEqual(self.proxy.service.reload_certificates(), {"edge": True})
        self.assertEqual(len(tls_events(events, "reloaded")), 1)
        new = yield self.connect()
        self.assertEqual(new.peer_names(), ["new.example"])
        response = yield get(old)
        self.assertEqual(response.status, 200)
        self.assertEqual(old.peer_names(), ["old.example"])

    @inlineCallbacks
    def test_broken_files_keep_the_old(self) -> Any:
        """
        A broken new certificate: the reload fails with a log event saying
        why, and the old certificate keeps serving.
        """
        events = capture(self)
        with open(self.pair[0], "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\ntruncated")
        self.assertEqual(self.proxy.service.reload_certificates(), {"edge": False})
        [event] = tls_events(events, "reload_failed")
        self.assertEqual(event["listener"], "edge")
        self.assertEqual(event["field"], "certificates[0].cert")
        self.assertIn("holds no PEM certificate", event["why"])
        client = yield self.connect()
        self.assertEqual(client.peer_names(), ["old.example"])
        # a key that does not match the new certificate is refused too
        self.files.write(self.ca.issue_cert("new.example"), key_path=self.files.path("elsewhere.key"), cert_path=self.pair[0])
        self.assertEqual(self.proxy.service.reload_certificates(), {"edge": False})
        client = yield self.connect()
        self.assertEqual(client.peer_names(), ["old.example"])

    @inlineCallbacks
    def test_sighup(self) -> Any:
        """
        SIGHUP reloads the certificates (the handler is installed under a
        real reactor and removed when the service stops).
        """
        listener = self.proxy.service.tls_listeners()[0]
        self.files.write(self.ca.issue_cert("new.example"), *self.pair)
        os.kill(os.getpid(), signal.SIGHUP)
        yield self.harness.wait_for(lambda: listener.tls_server.generation == 1)
        client = yield self.connect()
        self.assertEqual(client.peer_names(), ["new.example"])
        from twisted_proxy import service as service_module

        self.assertIn(self.proxy.service, service_module._sighup_services)
        yield self.proxy.service.stopService()
        self.assertNotIn(self.proxy.service, service_module._sighup_services)


class StartFailureTests(TestCase):
    """
    A TLS listener whose files cannot be read at start stops the process
    (exit status 1), as a listener that cannot bind does.
    """

    def test_unreadable_certificate(self) -> None:
        files = Files(self)
        pair = files.leaf(trustme.CA(), "a.example")
        config = parse_config(
            {
                "proxy": {"access_log": "off"},
                "listener": [
                    {
                        "name": "edge",
                        "kind": "reverse",
                        "endpoint": "tcp:0:interface=127.0.0.1",
                        "tls": {"certificates": [cert_entry(pair)]},
                        "route": ROUTES,
                    }
                ],
                "backend": {"web": {"servers": [{"url": "http://127.0.0.1:1"}]}},
            },
            "p.toml",
            files.dir,
        )
        os.remove(pair[0])
        from twisted.internet import reactor

        top = make_service(config, reactor)
        codes: List[int] = []
        top.exit_process = codes.append  # type: ignore[attr-defined]
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(codes, [1])
        self.assertEqual(len(top.failures), 1)
        self.assertIn("listener edge: cannot start TLS: tls.certificates[0].cert: cannot read", top.failures[0])


class RedirectTests(TestCase):
    """
    C{redirect_to_https} on a plain listener.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)

    @inlineCallbacks
    def check(self, redirect: Any, location: bytes, kind: str = "reverse") -> Any:
        table: Dict[str, Any] = {
            "name": "plain",
            "kind": kind,
            "endpoint": "tcp:0:interface=127.0.0.1",
            "redirect_to_https": redirect,
        }
        proxy = self.harness.start({"proxy": {"access_log": "off"}, "listener": [table]})
        client = yield self.harness.client(proxy.port)
        client.send(b"GET /a/b?c=1 HTTP/1.1\r\nHost: site.example:8080\r\n\r\n")
        response = yield client.response()
        self.assertEqual(response.status, 308)
        self.assertEqual(response.header(b"location"), location)
        # the connection stays usable
        client.send(b"HEAD / HTTP/1.1\r\nHost: site.example\r\n\r\n")
        response = yield client.response(b"HEAD")
        self.assertEqual(response.status, 308)

    def test_port(self) -> Any:
        """
        C{redirect_to_https = 8443}: the port is in the Location.
        """
        return self.check(8443, b"https://site.example:8443/a/b?c=1")

    def test_true(self) -> Any:
        """
        C{redirect_to_https = true}: https on 443, no port written.
        """
        return self.check(True, b"https://site.example/a/b?c=1")

    def test_forward(self) -> Any:
        """
        A forward listener redirects too.
        """
        return self.check(443, b"https://site.example/a/b?c=1", "forward")


class BackendTLSIntegrationTests(TestCase):
    """
    https:// servers: verification, C{server_name}, mutual TLS, health.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.files = Files(self)
        self.ca = trustme.CA()
        self.ca_file = self.files.ca(self.ca)

    def backend(self, names: Sequence[str] = ("127.0.0.1",), **tls: Any) -> Origin:
        """
        An origin over TLS with a certificate for C{names} from C{self.ca}.
        """
        pair = self.files.leaf(self.ca, *names)
        return tls_origin(self.harness, ServerTLS(tls_config(pair, **tls)))

    def start(self, origin: Origin, **server: Any) -> Any:
        entry = dict({"url": f"https://127.0.0.1:{origin.port}"}, **server)
        return self.harness.reverse(ROUTES, {"web": {"servers": [entry], "retries": 0}})

    @inlineCallbacks
    def request(self, proxy: Any) -> Any:
        client = yield self.harness.client(proxy.port)
        response = yield get(client)
        return response

    @inlineCallbacks
    def test_trusted_ca(self) -> Any:
        """
        A server whose certificate is from C{ca} and for its host answers;
        the connection is reused for the next request.
        """
        origin = self.backend()
        proxy = self.start(origin, ca=self.ca_file)
        client = yield self.harness.client(proxy.port)
        for _ in range(2):
            response = yield get(client)
            self.assertEqual((response.status, response.body), (200, b"hello, world\n"))
        self.assertEqual(origin.connections_made, 1)

    @inlineCallbacks
    def test_untrusted(self) -> Any:
        """
        A certificate from a CA that is not trusted: 502, and a log event
        naming the reason; the request never reaches the server.
        """
        events = capture(self)
        origin = self.backend()
        proxy = self.start(origin)  # the system trust store does not know trustme's CA
        response = yield self.request(proxy)
        self.assertEqual(response.status, 502)
        [event] = tls_events(events, "handshake_failed")
        self.assertIn("certificate verify failed", event["why"])
        self.assertEqual(origin.user_requests(), [])

    @inlineCallbacks
    def test_name_mismatch(self) -> Any:
        """
        A trusted certificate for another name: 502, logged as such.
        """
        events = capture(self)
        origin = self.backend(("backend.internal",))
        proxy = self.start(origin, ca=self.ca_file)
        response = yield self.request(proxy)
        self.assertEqual(response.status, 502)
        [event] = tls_events(events, "handshake_failed")
        self.assertIn("certificate is not for 127.0.0.1", event["why"])

    @inlineCallbacks
    def test_server_name(self) -> Any:
        """
        C{server_name} is sent as SNI and verified instead of the URL's
        host.
        """
        origin = self.backend(("backend.internal",))
        proxy = self.start(origin, ca=self.ca_file, server_name="backend.internal")
        response = yield self.request(proxy)
        self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_verify_false(self) -> Any:
        """
        C{verify = false} reaches an untrusted server, and start-up says so
        loudly.
        """
        events = capture(self)
        origin = self.backend(("elsewhere.example",))
        proxy = self.start(origin, verify=False)
        [warning] = tls_events(events, "verify_disabled")
        self.assertIn("WITHOUT any certificate verification", warning["log_format"])
        response = yield self.request(proxy)
        self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_mutual_tls(self) -> Any:
        """
        A server requiring a client certificate gets C{client_cert}; without
        one the request fails with 502.
        """
        client_ca = trustme.CA()
        origin = self.backend(client_ca=self.files.ca(client_ca), verify_client="required")
        client_pair = self.files.leaf(client_ca, "proxy.example", common_name="proxy")
        proxy = self.start(
            origin, ca=self.ca_file, client_cert=client_pair[0], client_key=client_pair[1]
        )
        response = yield self.request(proxy)
        self.assertEqual(response.status, 200)
        # the same server without a client certificate
        other = self.harness.reverse(
            ROUTES,
            {"web": {"servers": [{"url": f"https://127.0.0.1:{origin.port}", "ca": self.ca_file}], "retries": 0}},
        )
        response = yield self.request(other)
        self.assertEqual(response.status, 502)
        self.assertEqual(len(origin.user_requests()), 1)

    @inlineCallbacks
    def test_idle_pooled_connection_closed(self) -> Any:
        """
        A pooled TLS connection to a server is closed after
        C{pool_idle_timeout}, like a plain one.
        """
        origin = self.backend()
        proxy = self.harness.reverse(
            ROUTES,
            {"web": {"servers": [{"url": f"https://127.0.0.1:{origin.port}", "ca": self.ca_file}]}},
            proxy={"pool_idle_timeout": 0.2},
        )
        client = yield self.harness.client(proxy.port)
        response = yield get(client, headers=b"Connection: close\r\n")
        self.assertEqual(response.status, 200)
        self.assertEqual(origin.connections_made, 1)
        yield self.harness.wait_for(lambda: not origin.connections)

    @inlineCallbacks
    def test_health_probe(self) -> Any:
        """
        Health probes use the server's TLS settings: healthy with the right
        CA, failing without it.
        """
        origin = self.backend()
        config = HealthConfig(path="/health", timeout=5)
        good = Server(ServerConfig(url="", scheme="https", host="127.0.0.1", port=origin.port, ca=self.ca_file))
        probe = HTTPProbe(self.harness.reactor, config, backend_tls_policy([good]))
        healthy = yield probe.probe(good)
        self.assertTrue(healthy)
        bad = Server(ServerConfig(url="", scheme="https", host="127.0.0.1", port=origin.port))
        probe = HTTPProbe(self.harness.reactor, config, backend_tls_policy([bad]))
        yield self.assertFailure(probe.probe(bad), Exception)
        self.assertEqual([r.path for r in origin.requests], ["/health"])
        # let the probes' connections finish closing
        yield self.harness.wait_for(lambda: not origin.connections)
