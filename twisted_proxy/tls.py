# -*- test-case-name: tests.test_tls -*-
"""
TLS: listeners that terminate it, backends reached over it, and plain
listeners that send every client to https.

Listeners
    L{ServerTLS} is the C{IOpenSSLServerConnectionCreator} of a listener
    with a C{tls} table: one pyOpenSSL context per certificate, the one for
    a connection chosen by SNI (pyOpenSSL's servername callback: Twisted's
    C{CertificateOptions} has no SNI) among the DNS names of each
    certificate's subjectAltName (its CN when it has none), exact names
    first, then C{*.example.com} wildcards (one label, as clients match
    them); the first certificate is the default (no SNI, or an unknown
    name). Defaults: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers for
    1.2, the key-exchange groups L{SERVER_GROUPS}, no compression, no
    renegotiation, the server's cipher order; ALPN offers
    L{ALPN_PROTOCOLS}. L{ServerTLS.reload} re-reads every file; on
    any error the contexts in use stay. The service wraps the listener's
    factory with L{wrap_server_factory}: the proxy's own TLS layer,
    L{ListenerTLS}, over the pyOpenSSL connections L{ServerTLS} makes.

    With C{client_ca}, client certificates are verified (C{verify_client}
    C{"required"} or C{"optional"}); L{twisted_proxy.engine.front.SubjectFrontFactory} makes protocols that
    remove any client-sent C{client_subject_header} and add the verified
    subject (RFC 4514) instead.

Backends
    L{BackendTLS} is the C{IOpenSSLClientConnectionCreator} of one
    C{https://} server (Twisted's C{optionsForClientTLS}: service_identity
    checks the host name, or C{server_name}, against the certificate); it
    is the third item of that server's pool key, so plain and TLS
    connections never mix. L{BackendTLSPolicy} hands the same settings to
    the health checks' C{Agent}.

Redirects
    L{RedirectRouter} answers every request of a plain listener with
    C{redirect_to_https} by a 308 to the same URL on https.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.bindings.openssl.binding import Binding
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolNegotiationFactory,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import alsoProvides, implementer

from twisted_proxy.flow import write_soon
from twisted_proxy.model import ServerConfig, TLSConfig


log = Logger()

__all__ = [
    "ALPN_PROTOCOLS",
    "BackendTLS",
    "BackendTLSPolicy",
    "DEFAULT_CIPHERS",
    "SERVER_GROUPS",
    "ServerTLS",
    "TLSFileError",
    "check_ciphers",
    "client_subject",
    "load_ca_file",
    "load_certificate_pair",
    "wrap_server_factory",
]

#: ALPN protocols a listener accepts, in order of preference. Only HTTP/1.1
#: is spoken today; h2 goes first here once it is.
ALPN_PROTOCOLS: Tuple[bytes, ...] = (b"http/1.1",)
#: ALPN protocols offered to https backends.
BACKEND_ALPN: Tuple[bytes, ...] = (b"http/1.1",)

#: TLS 1.2 ciphers by default: ECDHE key exchange (forward secrecy) with an
#: AEAD (AES-GCM, ChaCha20-Poly1305) only, as Mozilla's "intermediate"
#: profile. TLS 1.3's suites are all AEAD and forward-secret; OpenSSL's
#: defaults are kept.
DEFAULT_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
#: Key-exchange groups a listener offers (TLS 1.2's ECDHE curves, TLS 1.3's
#: key shares), most preferred first: Mozilla's "intermediate" profile
#: (X25519, P-256, P-384). OpenSSL's own list adds X448, P-521 and the
#: ffdhe groups (and X25519MLKEM768 from OpenSSL 3.5).
SERVER_GROUPS: Tuple[str, ...] = ("X25519", "prime256v1", "secp384r1")
MIN_VERSIONS: Mapping[str, int] = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
VERIFY_CLIENT: Tuple[str, ...] = ("required", "optional")
SERVER_OPTIONS = SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE
#: the session id context (needed for session resumption with client
#: certificates)
SESSION_ID = b"twisted-proxy"


class TLSFileError(ValueError):
    """
    A certificate, key or CA file that cannot be used, or cipher string
    that selects nothing.

    @ivar field: the key it concerns (C{"cert"}, C{"key"}, C{"client_ca"},
        C{"ciphers"}, C{"ca"}, C{"client_cert"}, C{"client_key"}).
    @ivar index: the position in C{tls.certificates}, or L{None}.
    @ivar message: what is wrong.
    """

    def __init__(self, field: str, message: str, index: Optional[int] = None) -> None:
        ValueError.__init__(self, field, message, index)
        self.field = field
        self.message = message
        self.index = index

    @property
    def where(self) -> str:
        if self.index is None:
            return self.field
        return f"certificates[{self.index}].{self.field}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


# --- files -------------------------------------------------------------------


def _read(path: str, field: str, index: Optional[int] = None) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSFileError(field, f"cannot read {path}: {e.strerror or e}", index) from None


def _ssl_reason(error: Exception) -> str:
    """
    The reasons OpenSSL gave, readable (C{SSL.Error}'s argument is a list
    of C{(library, function, reason)}).
    """
    reasons = []
    args = getattr(error, "args", ())
    if args and isinstance(args[0], list):
        for item in args[0]:
            if isinstance(item, tuple) and item and item[-1]:
                reasons.append(str(item[-1]))
    return "; ".join(reasons) or str(error) or type(error).__name__


def _load_certificates(path: str, field: str, index: Optional[int] = None) -> List[x509.Certificate]:
    data = _read(path, field, index)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TLSFileError(field, f"{path} holds no PEM certificate", index)
    return certificates


def _load_key(path: str, field: str, index: Optional[int] = None) -> Any:
    data = _read(path, field, index)
    try:
        return load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSFileError(
            field, f"{path}: the private key is encrypted (a key without a passphrase is needed)", index
        ) from None
    except Exception as e:
        if b"PRIVATE KEY" not in data:
            raise TLSFileError(field, f"{path} holds no PEM private key", index) from None
        raise TLSFileError(field, f"{path}: cannot load the private key: {e}", index) from None


def _public_bytes(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]


def load_certificate_pair(
    cert_path: str, key_path: str, index: Optional[int] = None
) -> Tuple[List[x509.Certificate], Any]:
    """
    Read and check a certificate chain file and its private key.

    @return: the certificates (leaf first) and the key.
    @raise TLSFileError: naming C{"cert"} or C{"key"}; a key that does not
        match the certificate is a C{"cert"} error.
    """
    certificates = _load_certificates(cert_path, "cert", index)
    key = _load_key(key_path, "key", index)
    try:
        matches = _public_bytes(key.public_key()) == _public_bytes(certificates[0].public_key())
    except Exception:
        matches = False
    if not matches:
        raise TLSFileError(
            "cert",
            f"the certificate in {cert_path} does not match the private key in {key_path}",
            index,
        )
    return certificates, key


def load_ca_file(path: str, field: str = "client_ca") -> List[x509.Certificate]:
    """
    The CA certificates of a PEM file (at least one).

    @raise TLSFileError: naming C{field}.
    """
    return _load_certificates(path, field)


def check_ciphers(ciphers: str) -> None:
    """
    @raise TLSFileError: if OpenSSL selects no cipher from C{ciphers}.
    """
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        ctx.set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError) as e:
        raise TLSFileError(
            "ciphers", f"{ciphers!r} selects no cipher OpenSSL knows ({_ssl_reason(e)})"
        ) from None


def certificate_names(certificate: x509.Certificate) -> List[str]:
    """
    The DNS names a certificate is for: its subjectAltName DNS entries, or
    its common name when it has no subjectAltName; lower case, without a
    trailing dot.
    """
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        names = [
            str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    else:
        names = list(san.value.get_values_for_type(x509.DNSName))
    return [n.lower().rstrip(".") for n in names if n]


# --- listeners -------------------------------------------------------------------


def _restrict_groups(context: SSL.Context, groups: Sequence[str]) -> Optional[str]:
    """
    Offer only C{groups} on C{context}, in this order of preference.

    pyOpenSSL (26.4 and older) has no method for it: this calls OpenSSL's
    C{SSL_CTX_set1_groups_list} through cryptography's OpenSSL binding
    (which exports it by its older name, C{SSL_CTX_set1_curves_list}) on
    pyOpenSSL's C{Context._context}, the one private name this module uses;
    replace it with pyOpenSSL's method once there is one.

    @return: L{None} when done, else why not (OpenSSL's defaults stay).
    """
    lib = Binding().lib
    set_list = getattr(lib, "SSL_CTX_set1_curves_list", None)
    if set_list is None:
        return "cryptography's OpenSSL binding lacks SSL_CTX_set1_curves_list"
    if set_list(context._context, ":".join(groups).encode("ascii")) != 1:
        # leave no error in OpenSSL's queue for pyOpenSSL's next call to find
        lib.ERR_clear_error()
        return "OpenSSL does not know them all"
    return None


def _alpn_select(connection: SSL.Connection, offered: List[bytes]) -> Any:
    for protocol in ALPN_PROTOCOLS:
        if protocol in offered:
            return protocol
    # no common protocol: carry on without ALPN (as nginx does)
    return SSL.NO_OVERLAPPING_PROTOCOLS


class _Contexts:
    """
    One generation of a listener's contexts: the default and the SNI
    index.
    """

    __slots__ = ("contexts", "exact", "wildcard", "names")

    def __init__(self) -> None:
        self.contexts: List[SSL.Context] = []
        self.exact: Dict[str, int] = {}
        self.wildcard: Dict[str, int] = {}
        self.names: List[List[str]] = []

    def add(self, context: SSL.Context, names: Sequence[str]) -> None:
        index = len(self.contexts)
        self.contexts.append(context)
        self.names.append(list(names))
        for name in names:
            if name.startswith("*."):
                # the first certificate naming it wins
                self.wildcard.setdefault(name[2:], index)
            elif "*" not in name:
                self.exact.setdefault(name, index)

    def select(self, name: str) -> int:
        """
        The index of the certificate for the server name C{name}.
        """
        index = self.exact.get(name)
        if index is not None:
            return index
        dot = name.find(".")
        if dot > 0:
            index = self.wildcard.get(name[dot + 1 :])
            if index is not None:
                return index
        return 0


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The TLS side of one listener: contexts per certificate, chosen by SNI.

    @param config: the listener's C{tls} table.
    @param listener: the listener's name (for log events).

    @raise TLSFileError: if a file cannot be used.
    """

    def __init__(self, config: TLSConfig, listener: str = "") -> None:
        self.config = config
        self.listener = listener
        self.generation = 0
        self._contexts = self._load()

    # IOpenSSLServerConnectionCreator

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._contexts.contexts[0], None)

    # SNI

    def select(self, server_name: Optional[str]) -> int:
        """
        The index (in C{config.certificates}) of the certificate a client
        asking for C{server_name} gets.
        """
        if not server_name:
            return 0
        return self._contexts.select(server_name.lower().rstrip("."))

    def _servername(self, connection: SSL.Connection) -> None:
        try:
            raw = connection.get_servername()
            if not raw:
                return
            contexts = self._contexts
            name = raw.decode("ascii").lower().rstrip(".")
            context = contexts.contexts[contexts.select(name)]
            if connection.get_context() is not context:
                connection.set_context(context)
        except Exception:
            # never let a bad name break the handshake: the default serves
            log.failure("listener {listener}: SNI callback failed", listener=self.listener)

    # loading

    def _load(self) -> _Contexts:
        config = self.config
        client_ca = config.client_ca
        if client_ca is not None:
            load_ca_file(client_ca)
        if config.ciphers is not None:
            check_ciphers(config.ciphers)
        contexts = _Contexts()
        now = datetime.datetime.now(datetime.timezone.utc)
        for index, pair in enumerate(config.certificates):
            certificates, _ = load_certificate_pair(pair.cert, pair.key, index)
            leaf = certificates[0]
            if leaf.not_valid_after_utc < now:
                log.warn(
                    "listener {listener}: certificate {cert} expired on {expired}",
                    listener=self.listener,
                    cert=pair.cert,
                    expired=leaf.not_valid_after_utc.isoformat(),
                )
            contexts.add(self._context(pair.cert, pair.key, index), certificate_names(leaf))
        return contexts

    def _context(self, cert: str, key: str, index: int) -> SSL.Context:
        config = self.config
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(MIN_VERSIONS[config.min_version])
        ctx.set_options(SERVER_OPTIONS)
        ctx.set_cipher_list((config.ciphers or DEFAULT_CIPHERS).encode("ascii"))
        why = _restrict_groups(ctx, SERVER_GROUPS)
        if why is not None and index == 0:
            # once per load: every context gets the same answer
            log.warn(
                "listener {listener}: key-exchange groups not restricted to {groups},"
                " OpenSSL's defaults stay: {why}",
                listener=self.listener,
                groups=":".join(SERVER_GROUPS),
                why=why,
                tls_event="groups_not_restricted",
            )
        ctx.set_session_id(SESSION_ID)
        try:
            ctx.use_certificate_chain_file(cert)
        except SSL.Error as e:
            raise TLSFileError("cert", f"{cert}: {_ssl_reason(e)}", index) from None
        try:
            ctx.use_privatekey_file(key)
            ctx.check_privatekey()
        except SSL.Error as e:
            raise TLSFileError("key", f"{key}: {_ssl_reason(e)}", index) from None
        ctx.set_alpn_select_callback(_alpn_select)
        if len(config.certificates) > 1:
            # (with one certificate every name gets it: no call into
            # Python per handshake to find that out)
            ctx.set_tlsext_servername_callback(self._servername)
        if config.client_ca is not None:
            # every context verifies: OpenSSL consults the context SNI
            # switched to for the trust store and the CA list it sends
            ca = os.fsencode(config.client_ca)
            try:
                ctx.load_verify_locations(ca)
                ctx.load_client_ca(ca)
            except SSL.Error as e:
                raise TLSFileError("client_ca", f"{config.client_ca}: {_ssl_reason(e)}") from None
            mode = SSL.VERIFY_PEER
            if config.verify_client != "optional":
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            ctx.set_verify(mode)
        return ctx

    def reload(self) -> bool:
        """
        Re-read every certificate, key and CA file. New handshakes use the
        new contexts; established connections keep theirs. On any error
        the contexts in use stay and a log event says why.

        @return: whether the new files are in use.
        """
        try:
            contexts = self._load()
        except TLSFileError as e:
            log.error(
                "listener {listener}: certificates not reloaded, the old ones stay: {why}",
                listener=self.listener,
                why=str(e),
                field=e.where,
                tls_event="reload_failed",
            )
            return False
        except Exception:  # pragma: no cover - a defect, not a file problem
            log.failure(
                "listener {listener}: certificates not reloaded", listener=self.listener
            )
            return False
        self._contexts = contexts
        self.generation += 1
        log.info(
            "listener {listener}: certificates reloaded ({count}): {names}",
            listener=self.listener,
            count=len(contexts.contexts),
            names=", ".join("/".join(n) or "(no name)" for n in contexts.names),
            tls_event="reloaded",
        )
        return True

    @property
    def names(self) -> List[List[str]]:
        """
        The names of each certificate in use.
        """
        return [list(n) for n in self._contexts.names]


# --- the TLS transport --------------------------------------------------------------

#: seconds a closing TLS connection may take to flush what it must send
#: before the handshake is done (then it is aborted)
CLOSE_TIMEOUT = 10.0


class ProxyTLSTransport(BufferingTLSTransport):
    """
    Twisted's TLS transport, closing as the proxy's protocols expect of a
    TCP one:

    - the proxy's protocols keep a streaming producer registered for their
      whole life (the back-pressure relay); Twisted's TLS waits for it to
      be unregistered before it closes, TCP does not: C{loseConnection}
      unregisters it;
    - after sending its close_notify it closes the TCP connection at once
      instead of waiting for the peer's (as nginx does), so a peer that
      never answers cannot hold the connection open;
    - C{loseWriteConnection} is a TLS half-close (our close_notify; reading
      goes on) instead of a TCP one under the TLS layer.
    """

    _close_timer: Any = None

    def loseConnection(self) -> None:
        if self.disconnecting or not self.connected:
            return
        if self._producer is not None:
            self.unregisterProducer()
        BufferingTLSTransport.loseConnection(self)
        transport: Any = self.transport
        if self._lostTLSConnection or self._aborted or transport is None:
            return
        if not self._appSendBuffer:
            # everything, close_notify included, is in TCP's buffer
            transport.loseConnection()
        elif self._close_timer is None:
            # bytes wait for the handshake to end: not forever
            clock: Any = self.factory._clock
            self._close_timer = clock.callLater(CLOSE_TIMEOUT, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        transport: Any = self.transport
        if self.connected and transport is not None:
            transport.abortConnection()

    def loseWriteConnection(self) -> None:
        if self.disconnecting or not self.connected or self._lostTLSConnection:
            return
        if not self._handshakeDone or self._appSendBuffer:
            self.loseConnection()
            return
        self._aggregator.flush()
        try:
            self._tlsConnection.shutdown()
        except SSL.Error:
            pass
        self._flushSendBIO()

    def connectionLost(self, reason: Any = None) -> None:
        timer, self._close_timer = self._close_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        BufferingTLSTransport.connectionLost(self, reason)

    def _flushSendBIO(self) -> None:
        """
        The TLS records go to the TCP connection the way the proxy's plain
        writes do (flow.write_soon): sent at the end of the reactor turn,
        the socket not registered for writing.
        """
        try:
            data = self._tlsConnection.bio_read(2**15)
        except SSL.WantReadError:
            # nothing in the send BIO right now
            return
        write_soon(self.transport, data)


class TLSFactory(TLSMemoryBIOFactory):
    """
    L{TLSMemoryBIOFactory} making L{ProxyTLSTransport}s: backends' TLS
    (listeners have L{ListenerTLSFactory}).
    """

    protocol = ProxyTLSTransport


class ListenerTLS(ProtocolWrapper):
    """
    A listener's TLS: the records of a client connection, over the memory
    BIOs of a pyOpenSSL connection that L{ServerTLS} made (its SNI, ALPN,
    groups and client verification), in few steps.

    Twisted's TLS layer (L{TLSMemoryBIOProtocol}) does the same with more
    machinery (producer membranes, write aggregation, handshake
    notifications) that a listener does not use: a bare responder behind
    it answers 1.6x as many keep-alive requests behind this layer
    (bench/bare_static.py ``--tls-stack pyopenssl-lean``). Backends keep
    Twisted's layer (L{TLSFactory}).

    - Reads: each TCP read goes into the BIO; the handshake is driven, then
      every whole record is decrypted and handed on at once.
    - Writes: encrypted as they come; the records of a read's answers go
      out at the end of the reactor turn (L{write_soon}), other writes at
      once. Back-pressure is TCP's: the producer the proxy registers goes
      to the TCP transport, which pauses it past its buffer.
    - Closing: C{loseConnection} sends close_notify and closes the TCP
      connection at once (as nginx does); C{loseWriteConnection} sends
      close_notify and reads on (a tunnel's half-close); the client's
      close_notify closes the connection. Bytes written before the
      handshake ended (the proxy never answers before a request) go out
      after it, or not at all if the connection closes first.
    - A TLS error (handshake refused, bad record) sends OpenSSL's alert and
      closes; the proxy's protocol gets it as the reason of its
      C{connectionLost}.
    """

    transport: Any
    wrappedProtocol: Any
    _handshake_done = False
    #: TLS ended: an error, or the client's close_notify
    _tls_over = False
    #: inside dataReceived: records go out once at its end
    _in_read = False
    #: application bytes written before the handshake ended
    _early: Optional[List[bytes]] = None
    #: why TLS failed (the protocol's connectionLost gets it)
    _failure: Any = None

    def __init__(self, factory: Any, wrapped: Any, connection: SSL.Connection) -> None:
        ProtocolWrapper.__init__(self, factory, wrapped)
        self._tls = connection
        connection.set_accept_state()
        #: the memory BIOs (pyOpenSSL's private names; None: unknown)
        self._into = getattr(connection, "_into_ssl", None)
        self._from = getattr(connection, "_from_ssl", None)
        #: OpenSSL's SSL object, when records may be read and written by
        #: direct calls (see _direct); None: through pyOpenSSL's methods
        self._ssl: Any = None
        if (
            _DIRECT is not None
            and _BIO_MEM_DATA is not None
            and self._into is not None
            and self._from is not None
        ):
            self._ssl = getattr(connection, "_ssl", None)

    def makeConnection(self, transport: Any) -> None:
        # (ProtocolWrapper's, without what nothing here uses and every
        # connection paid for: the TCP transport's interfaces declared on
        # this object, and the factory's registry of live wrappers)
        self.connected = 1
        self.transport = transport
        self.wrappedProtocol.makeConnection(self)

    # reading

    def dataReceived(self, data: bytes) -> None:
        if self._tls_over:
            return
        tls = self._tls
        ssl = self._ssl
        into = self._into
        if ssl is None or _DIRECT_BIO_WRITE(into, data, len(data)) != len(data):
            # (a memory BIO takes everything: anything else, pyOpenSSL's
            # own call says why)
            tls.bio_write(data)
        self._in_read = True
        try:
            # whether the BIO may hold a record: yes after a read (then after
            # each record as the BIO's fill says)
            more = True
            if not self._handshake_done:
                try:
                    tls.do_handshake()
                except SSL.WantReadError:
                    return
                except SSL.Error:
                    self._failed(Failure())
                    return
                self._handshaken()
                more = _bio_fill(into) != 0
            while more and not self._tls_over:
                try:
                    if ssl is not None:
                        size = _DIRECT_SSL_READ(ssl, _READ_BUFFER, READ_SIZE)
                        if size <= 0:
                            # pyOpenSSL's exception for OpenSSL's error
                            # (WantReadError, ZeroReturnError, Error)
                            tls._raise_ssl_error(ssl, size)
                            break  # (no error, and nothing read)
                        plain = _ffi_unpack(_READ_BUFFER, size)
                        # a record's plaintext is at most READ_SIZE: a
                        # shorter one was a whole record, and OpenSSL holds
                        # no more of it (otherwise ask again); what else
                        # there is is in the BIO
                        more = size >= READ_SIZE or _BIO_MEM_DATA(into, _FFI_NULL) != 0
                    else:
                        plain = tls.recv(READ_SIZE)
                        more = len(plain) >= READ_SIZE or _bio_fill(into) != 0
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:
                    # the client's close_notify: ours, then the end
                    self._tls_over = True
                    self._shutdown()
                    self.transport.loseConnection()
                    break
                except SSL.Error:
                    self._failed(Failure())
                    break
                wrapped = self.wrappedProtocol
                if wrapped is None:
                    break
                wrapped.dataReceived(plain)
        finally:
            self._in_read = False
            self._flush()

    def _handshaken(self) -> None:
        self._handshake_done = True
        early, self._early = self._early, None
        if early and not self.disconnecting:
            self._send(early)

    def _failed(self, failure: Failure) -> None:
        self._tls_over = True
        self._failure = failure
        self._flush()  # OpenSSL's alert
        self.transport.loseConnection()

    # writing

    def write(self, data: bytes) -> None:
        if data and not self.disconnecting and not self._tls_over:
            self._send((data,))

    def writeSequence(self, data: Iterable[bytes]) -> None:
        if not self.disconnecting and not self._tls_over:
            pieces = data if type(data) is list else list(data)
            if len(pieces) > 1 and sum(map(len, pieces)) <= RECORD_SIZE:
                # a head and a small body: one record, one encryption
                self._send((b"".join(pieces),))
            else:
                self._send(pieces)

    def _send(self, pieces: Sequence[bytes]) -> None:
        if not self._handshake_done:
            if self._early is None:
                self._early = []
            self._early.extend(piece for piece in pieces if piece)
            return
        tls = self._tls
        try:
            ssl = self._ssl
            for piece in pieces:
                if not piece:
                    continue
                if ssl is None:
                    tls.sendall(piece)
                    continue
                written = _DIRECT_SSL_WRITE(ssl, piece, len(piece))
                if written != len(piece):
                    if written <= 0:
                        # pyOpenSSL's exception for OpenSSL's error
                        tls._raise_ssl_error(ssl, written)
                        written = 0
                    # (whole records of it were written: the rest, as
                    # pyOpenSSL writes)
                    tls.sendall(piece[written:])
        except SSL.Error:
            self._failed(Failure())
            return
        if not self._in_read:
            self._flush()

    def _flush(self) -> None:
        """
        What OpenSSL wrote to the send BIO, to the TCP connection.
        """
        if self._ssl is not None:
            # straight into one buffer (nothing there: -1, and no error)
            while True:
                got = _DIRECT_BIO_READ(self._from, _WRITE_BUFFER, WRITE_BUFFER_SIZE)
                if got <= 0:
                    return
                write_soon(self.transport, _ffi_unpack(_WRITE_BUFFER, got))
                if got < WRITE_BUFFER_SIZE:
                    return
        tls = self._tls
        size = _bio_fill(self._from)
        if size >= 0:
            # exactly what is there, in one buffer of that size
            if size:
                write_soon(self.transport, tls.bio_read(size))
            return
        while True:
            try:
                out = tls.bio_read(BIO_READ_SIZE)
            except SSL.WantReadError:
                return
            write_soon(self.transport, out)
            if len(out) < BIO_READ_SIZE:
                return

    # closing

    def _shutdown(self) -> None:
        """
        Our close_notify, once the handshake is done.
        """
        if self._handshake_done:
            try:
                self._tls.shutdown()
            except SSL.Error:
                pass
            self._flush()

    def loseConnection(self) -> None:
        if self.disconnecting or not self.connected:
            return
        self.disconnecting = True
        if not self._tls_over:
            self._tls_over = True
            self._shutdown()
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._tls_over = True
        self.transport.abortConnection()

    def loseWriteConnection(self) -> None:
        if self.disconnecting or not self.connected or self._tls_over:
            return
        if not self._handshake_done or self._early:
            self.loseConnection()
            return
        self._shutdown()

    def getPeerCertificate(self) -> Any:
        return self._tls.get_peer_certificate()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._failure is not None:
            reason = self._failure
        self.connected = 0
        wrapped, self.wrappedProtocol = self.wrappedProtocol, None
        if wrapped is not None:
            wrapped.connectionLost(reason)


#: plaintext asked of OpenSSL per call (a record holds at most 16 KiB)
READ_SIZE = 16384
#: the plaintext of one TLS record at most: pieces written together up to
#: this size are joined and sent as one record
RECORD_SIZE = 16384


def _bio_fill(bio: Any) -> int:
    """
    The bytes a pyOpenSSL connection's memory BIO holds (C{_into_ssl}:
    received, not read by OpenSSL yet; C{_from_ssl}: written by OpenSSL,
    not sent yet), or -1 when this pyOpenSSL does not let us know.

    BIO_get_mem_data, through pyOpenSSL's binding, on its private BIO
    attributes: where those change, every call answers -1 and the layer
    works as Twisted's does (calls that end in WantReadError).
    """
    if bio is None or _BIO_MEM_DATA is None:
        return -1
    return int(_BIO_MEM_DATA(bio, _FFI_NULL))


#: the send BIO's records are copied out through one buffer of this size
#: (more at once: through pyOpenSSL's bio_read)
WRITE_BUFFER_SIZE = 65536

try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _ossl_lib

    _BIO_MEM_DATA: Any = _ossl_lib.BIO_get_mem_data
    _FFI_NULL = _ffi.NULL
except (ImportError, AttributeError):  # pragma: no cover - another pyOpenSSL
    _BIO_MEM_DATA = None

#: Direct calls for a connection's records. pyOpenSSL's recv, sendall,
#: bio_read and bio_write each check their arguments, allocate a C buffer
#: (16 KiB for a recv, whatever the record) and look for an error after a
#: call that succeeded: about half the cost of a small request's TLS here.
#: These call the same OpenSSL functions through pyOpenSSL's own binding,
#: with one buffer for every connection (the reactor's thread only; copied
#: out at once), and hand any failure to pyOpenSSL's error handling, so that
#: the exceptions are pyOpenSSL's. Where pyOpenSSL's private names change,
#: _DIRECT is None and its public methods are used.
try:
    _DIRECT: Any = (_ossl_lib.SSL_read, _ossl_lib.SSL_write, _ossl_lib.BIO_read, _ossl_lib.BIO_write)
    _DIRECT_SSL_READ, _DIRECT_SSL_WRITE, _DIRECT_BIO_READ, _DIRECT_BIO_WRITE = _DIRECT
    _READ_BUFFER = _ffi.new("char[]", READ_SIZE)
    _WRITE_BUFFER = _ffi.new("char[]", WRITE_BUFFER_SIZE)
    _ffi_unpack = _ffi.unpack
    if not callable(getattr(SSL.Connection, "_raise_ssl_error", None)):
        _DIRECT = None
except (NameError, AttributeError):  # pragma: no cover - another pyOpenSSL
    _DIRECT = None

#: TLS records taken from the send BIO per call when its fill is unknown
BIO_READ_SIZE = 65536


class ListenerTLSFactory(WrappingFactory):
    """
    A listener's factory behind L{ListenerTLS}.
    """

    noisy = False

    def __init__(self, creator: ServerTLS, wrapped: Any) -> None:
        WrappingFactory.__init__(self, wrapped)  # type: ignore[arg-type]
        self.creator = creator

    def buildProtocol(self, addr: Any) -> Optional[ListenerTLS]:  # type: ignore[override]
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return ListenerTLS(self, inner, self.creator.serverConnectionForTLS(None))


def wrap_server_factory(creator: ServerTLS, factory: Any) -> ListenerTLSFactory:
    """
    C{factory} behind TLS: what a listener with a C{tls} table listens
    with (L{ListenerTLS}).
    """
    return ListenerTLSFactory(creator, factory)


def advertise_alpn(factory: Any) -> Any:
    """
    Make C{factory} an C{IProtocolNegotiationFactory} accepting
    L{ALPN_PROTOCOLS}, for Twisted's own TLS (C{ssl:} endpoints): its ALPN
    callback, given no protocols, answers a client offering any with an
    internal-error alert (curl and browsers always offer h2 and http/1.1).
    """
    alsoProvides(factory, IProtocolNegotiationFactory)
    factory.acceptableProtocols = lambda: list(ALPN_PROTOCOLS)
    return factory


# --- client certificate subject ---------------------------------------------------


def _escape_subject(text: str) -> bytes:
    """
    An RFC 4514 string safe as a header value: control and non-ASCII
    characters hex-escaped (C{\\c3\\a9}), as RFC 4514 allows.
    """
    out = []
    for ch in text:
        if 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.extend("\\%02x" % b for b in ch.encode("utf-8"))
    return "".join(out).encode("ascii")


def client_subject(transport: Any) -> Optional[bytes]:
    """
    The subject of the verified client certificate of a TLS connection
    (RFC 4514, e.g. C{b"CN=alice,O=Example"}), or L{None} when the client
    sent none.
    """
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    try:
        certificate = get()
    except Exception:
        return None
    if certificate is None:
        return None
    if not isinstance(certificate, x509.Certificate):
        certificate = certificate.to_cryptography()
    return _escape_subject(certificate.subject.rfc4514_string())


# --- backends ----------------------------------------------------------------------


def _x509(certificate: x509.Certificate) -> Any:
    return crypto.X509.from_cryptography(certificate)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    A client creator that does not verify the server (C{verify = false}),
    but still sends SNI and offers ALPN.
    """

    def __init__(self, server_name: str, certificate: Any, key: Any, chain: Sequence[Any]) -> None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_options(SSL.OP_NO_COMPRESSION)
        ctx.set_verify(SSL.VERIFY_NONE)
        ctx.set_alpn_protos(list(BACKEND_ALPN))
        if certificate is not None:
            ctx.use_certificate(certificate)
            for extra in chain:
                ctx.add_extra_chain_cert(extra)
            ctx.use_privatekey(key)
        self.ctx = ctx
        self.sni: Optional[bytes] = None
        if not (isIPAddress(server_name) or isIPv6Address(server_name)):
            self.sni = server_name.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.ctx, None)
        if self.sni is not None:
            connection.set_tlsext_host_name(self.sni)
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class BackendTLS:
    """
    How the proxy speaks TLS to one C{https://} server: verification of
    its certificate against C{ca} (else the system's trust store) for its
    host name (or C{server_name}), and a client certificate if configured.
    It is the third item of the server's pool key.

    @raise TLSFileError: if a file cannot be used.
    """

    def __init__(self, server: ServerConfig) -> None:
        from twisted.internet.ssl import (
            Certificate,
            TLSVersion,
            optionsForClientTLS,
            platformTrust,
            trustRootFromCertificates,
        )

        self.url = server.url
        self.server_name = server.server_name or server.host
        self.verify = server.verify
        self.ca = server.ca
        self.client_cert = server.client_cert
        certificate = key = None
        chain: List[Any] = []
        if server.client_cert is not None and server.client_key is not None:
            # cryptography objects: pyOpenSSL takes them (its own are deprecated)
            certificates, key = load_certificate_pair(server.client_cert, server.client_key)
            certificate, chain = certificates[0], certificates[1:]
        if not server.verify:
            self._creator: Any = _Unverified(self.server_name, certificate, key, chain)
            return
        if server.ca is not None:
            trust: Any = trustRootFromCertificates(
                [Certificate(_x509(c)) for c in load_ca_file(server.ca, "ca")]
            )
        else:
            trust = platformTrust()
        extra: Dict[str, Any] = {"raiseMinimumTo": TLSVersion.TLSv1_2}
        if certificate is not None:
            extra.update(privateKey=key, certificate=certificate, extraCertChain=chain)
        self._creator = optionsForClientTLS(
            self.server_name,
            trustRoot=trust,
            acceptableProtocols=list(BACKEND_ALPN),
            extraCertificateOptions=extra,
        )

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return self._creator.clientConnectionForTLS(tlsProtocol)

    def wrap(self, factory: Any, clock: Any) -> Any:
        """
        C{factory} (the pool's connection factory) behind this TLS: what
        the pool connects with for a key carrying this object.
        """
        return TLSFactory(self, True, factory, clock=clock)  # type: ignore[arg-type]

    def describe_failure(self, reason: Any) -> str:
        """
        Why a TLS connection to this server failed, in a few words.
        """
        return describe_tls_failure(reason)

    def describe(self) -> str:
        if not self.verify:
            return "TLS, not verified"
        trust = f"ca {self.ca}" if self.ca else "system trust store"
        return f"TLS, verified for {self.server_name!r} against the {trust}"

    def __repr__(self) -> str:
        return f"<BackendTLS {self.url} {self.describe()}>"


def describe_tls_failure(reason: Any) -> str:
    """
    Why a TLS connection to a server failed, in a few words (a
    C{Failure} from the handshake or the connection).
    """
    value = getattr(reason, "value", reason)
    try:
        from service_identity import VerificationError

        if isinstance(value, VerificationError):
            ids = []
            for error in getattr(value, "errors", ()):
                mismatched = getattr(error, "mismatched_id", None)
                ids.append(str(getattr(mismatched, "hostname", None) or getattr(mismatched, "ip", None) or mismatched))
            return "certificate is not for " + (", ".join(ids) or "this server")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, SSL.Error):
        return _ssl_reason(value)
    from twisted.internet import error as ierror

    if isinstance(value, (ierror.ConnectionDone, ierror.ConnectionLost)):
        return "the server closed the connection during the handshake"
    return str(value) or type(value).__name__


@implementer(IPolicyForHTTPS)
class BackendTLSPolicy:
    """
    The TLS settings of a backend's servers for an C{Agent} (the health
    checks): the same L{BackendTLS} the proxy's own connections use.
    """

    def __init__(self, servers: Iterable[Any]) -> None:
        self.creators: Dict[Tuple[str, int], Any] = {}
        for server in servers:
            address = server.address
            if len(address) > 2 and address[2] is not None:
                self.creators[(server.host.lower(), server.port)] = address[2]

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        host = hostname.decode("ascii") if isinstance(hostname, bytes) else hostname
        host = host.strip("[]").lower()
        creator = self.creators.get((host, port))
        if creator is None:
            from twisted.internet.ssl import optionsForClientTLS

            return optionsForClientTLS(host)
        return creator


def backend_tls_policy(servers: Iterable[Any]) -> Optional[BackendTLSPolicy]:
    """
    A L{BackendTLSPolicy} for C{servers}, or L{None} when none is https.
    """
    policy = BackendTLSPolicy(servers)
    return policy if policy.creators else None
