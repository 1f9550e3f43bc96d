# -*- test-case-name: tests.test_jwt_auth -*-
"""
The C{jwt} filter type: bearer-token authentication with JSON Web Tokens
(RFC 7519, RFC 6750), verified with PyJWT.

::

    [filter.api-auth]
    type = "jwt"
    algorithms = ["RS256"]                 # required; "none" is never accepted
    key_file = "jwt/public.pem"            # exactly one of key_file, jwks_file, secret
    # jwks_file = "jwt/jwks.json"          # a JWK set; the token's kid picks the key
    # secret = "at least 32 bytes of secret for HS256"   # HS* only
    audience = "api"                       # a string or a list; the token's aud must match
    issuer = "https://login.example.com/"  # a string or a list
    leeway = 30                            # seconds of clock skew allowed (default 0)
    forward_claims = { sub = "X-User", scope = "X-Scope" }
    header = "Authorization"               # where the token is (default: see below)
    realm = "api"                          # of the challenge (default "twisted-proxy")

The key material is read when the configuration is loaded:

 - C{key_file}: for RS*, PS*, ES* and EdDSA a PEM public key (or an X.509
   certificate, whose public key is used); for HS* a file holding the shared
   secret (a trailing newline is ignored).
 - C{jwks_file}: a JSON Web Key Set (C{{"keys": [...]}}) as an identity
   provider publishes it; keys with C{"use": "enc"} and keys for algorithms
   not in C{algorithms} are skipped. With several keys each needs a C{kid},
   and the token's C{kid} header chooses one.
 - C{secret}: the HS* shared secret inline.

Shared-secret (HS*) and public-key algorithms cannot be mixed in one filter:
that mix is what lets a token signed with HS256 and the public key as its
"secret" pass (the algorithm confusion attack). Every key must be strong
enough for its algorithm: HMAC secrets at least as long as the hash
(32 bytes for HS256, 48 for HS384, 64 for HS512; RFC 7518 §3.2), RSA keys at
least 2048 bits.

The token is taken from C{Authorization: Bearer TOKEN} on a reverse
listener and from C{Proxy-Authorization: Bearer TOKEN} on a forward one;
with C{header} set, from that header (C{Bearer } is optional there, except
in C{Authorization}/C{Proxy-Authorization}).

Verdicts (the challenge is C{WWW-Authenticate}, or C{Proxy-Authenticate}
with 407 on a forward listener):

 - no token: 401 C{Bearer realm="..."} (no error code: RFC 6750 §3.1);
 - several tokens or an empty one: 400 with C{error="invalid_request"};
 - a token that is malformed, badly signed, signed with an algorithm not in
   C{algorithms}, expired, not yet valid (C{nbf}), issued in the future
   (C{iat}), for another audience or from another issuer: 401 with
   C{error="invalid_token", error_description="..."} saying which. A token
   carrying an C{aud} claim is refused unless C{audience} is set (it is
   meant for a particular audience, RFC 7519 §4.1.3).

PyJWT checks the signature, C{aud} and C{iss}; C{exp}, C{nbf} and C{iat} are
checked against the filter's clock (the reactor, or a test's C{Clock}), with
C{leeway}. Verified tokens are remembered (the 1024 most recently used), so a
client reusing its token costs a dictionary lookup and the time checks, not
a signature verification.

On success the token's claims are merged into C{request.claims} (a rate limit
after it can use C{key = "claim:sub"}), and each claim named in
C{forward_claims} is sent to the backend in its header: strings as they are,
other values as compact JSON. Headers of those names sent by the client are
always removed first, whether the token is valid, invalid or missing. The
token header itself is passed on to the backend.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

import attrs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_pem_public_key,
)
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.filters.lru import LRU
from twisted_proxy.filters.headers import REQUEST_RESERVED, remove_headers, valid_header_name
from twisted_proxy.interfaces import IRequestFilter

__all__ = ["ALGORITHMS", "JwtFilter", "JwtKey", "JwtSpec", "build", "parse"]

#: accepted algorithms and the kind of key each needs
ALGORITHMS: Dict[str, str] = {
    "HS256": "oct",
    "HS384": "oct",
    "HS512": "oct",
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_HMAC_MIN = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA_MIN_BITS = 2048

DEFAULT_REALM = "twisted-proxy"
#: verified tokens remembered
CACHE_SIZE = 1024
#: longer tokens are verified every time rather than remembered
CACHE_MAX_TOKEN = 8192

_KEYS = frozenset(
    {
        "algorithms",
        "key_file",
        "jwks_file",
        "secret",
        "audience",
        "issuer",
        "leeway",
        "forward_claims",
        "header",
        "realm",
    }
)
_REALM = re.compile(r"[\x20-\x7e]+\Z")
_CTL_BYTES = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_AUTH_HEADERS = frozenset({b"authorization", b"proxy-authorization"})
# PyJWT 2.10 and later check that sub and jti are strings
_STRING_CLAIM_ERRORS: Tuple[type, ...] = tuple(
    getattr(jwt.exceptions, name)
    for name in ("InvalidSubjectError", "InvalidJTIError")
    if hasattr(jwt.exceptions, name)
)

# PyJWT verifies the signature, aud and iss; the times are checked here
# against the injected clock
_DECODE_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": True,
    "verify_iss": True,
}


@attrs.frozen
class JwtKey:
    """
    One verification key.

    @ivar kid: its key id (from a JWK set), or L{None}.
    @ivar key: the secret (bytes) or a C{cryptography} public key.
    @ivar algorithms: the configured algorithms this key verifies.
    """

    kid: Optional[str]
    key: Any = attrs.field(repr=False)
    algorithms: Tuple[str, ...]


@attrs.frozen
class JwtSpec:
    """
    A parsed C{jwt} filter table.

    @ivar keys: the verification keys (one, except from a JWK set).
    @ivar by_kid: whether the token's C{kid} chooses among C{keys}.
    @ivar forward_claims: C{(claim, header name)} pairs.
    @ivar header: the token's header, or L{None} for the default by
        listener kind.
    """

    algorithms: Tuple[str, ...]
    keys: Tuple[JwtKey, ...]
    by_kid: bool = False
    audience: Optional[Tuple[str, ...]] = None
    issuer: Optional[Tuple[str, ...]] = None
    leeway: float = 0.0
    forward_claims: Tuple[Tuple[str, bytes], ...] = ()
    header: Optional[bytes] = None
    realm: str = DEFAULT_REALM


# --- parsing ---------------------------------------------------------------


def _describe(key: Any) -> str:
    if isinstance(key, bytes):
        return f"a {len(key)}-byte secret"
    if isinstance(key, RSAPublicKey):
        return f"an RSA key ({key.key_size} bits)"
    if isinstance(key, EllipticCurvePublicKey):
        return f"an EC key on {_CURVE_NAMES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, Ed25519PublicKey):
        return "an Ed25519 key"
    if isinstance(key, Ed448PublicKey):
        return "an Ed448 key"
    return f"a {type(key).__name__}"


def _needs(alg: str) -> str:
    kind = ALGORITHMS[alg]
    if kind == "oct":
        return f"a secret of at least {_HMAC_MIN[alg]} bytes"
    if kind == "RSA":
        return f"an RSA key of at least {_RSA_MIN_BITS} bits"
    if kind == "EC":
        return f"an EC key on {_CURVE_NAMES[_CURVES[alg]]}"
    return "an Ed25519 or Ed448 key"


def _fits(alg: str, key: Any) -> bool:
    """
    Whether C{key} can verify C{alg} signatures (and is strong enough).
    """
    kind = ALGORITHMS[alg]
    if kind == "oct":
        return isinstance(key, bytes) and len(key) >= _HMAC_MIN[alg]
    if kind == "RSA":
        return isinstance(key, RSAPublicKey) and key.key_size >= _RSA_MIN_BITS
    if kind == "EC":
        return isinstance(key, EllipticCurvePublicKey) and key.curve.name == _CURVES[alg]
    return isinstance(key, (Ed25519PublicKey, Ed448PublicKey))


def _parse_algorithms(value: Any, path: str, errors: ErrorList) -> Optional[Tuple[str, ...]]:
    if not isinstance(value, list) or not value:
        errors.add(path, f'must be a non-empty list like ["RS256"], not {value!r}')
        return None
    algorithms: List[str] = []
    ok = True
    for i, item in enumerate(value):
        item_path = f"{path}[{i}]"
        if not isinstance(item, str):
            errors.add(item_path, f"must be a string, not {type(item).__name__}")
        elif item.lower() == "none":
            errors.add(item_path, "'none' (unsigned tokens) is never accepted")
        elif item not in ALGORITHMS:
            errors.add(
                item_path,
                f"unknown algorithm {item!r} (known: {', '.join(ALGORITHMS)})",
            )
        else:
            if item not in algorithms:
                algorithms.append(item)
            continue
        ok = False
    if not ok:
        return None
    kinds = {ALGORITHMS[a] for a in algorithms}
    if "oct" in kinds and len(kinds) > 1:
        errors.add(
            path,
            "shared-secret (HS*) and public-key algorithms cannot be mixed: a public"
            " key would be accepted as an HMAC secret (algorithm confusion)",
        )
        return None
    return tuple(algorithms)


def _read(value: Any, path: str, base_dir: str, errors: ErrorList) -> Optional[bytes]:
    """
    The content of the file named by C{value} (relative to C{base_dir}).
    """
    if not isinstance(value, str) or not value:
        errors.add(path, f"must be a file name, not {value!r}")
        return None
    full = os.path.abspath(os.path.join(base_dir, os.path.expanduser(value)))
    try:
        with open(full, "rb") as f:
            return f.read()
    except OSError as e:
        errors.add(path, f"cannot read {full!r}: {e.strerror or e}")
        return None


def _secret(raw: bytes, algorithms: Tuple[str, ...], path: str, errors: ErrorList) -> Optional[JwtKey]:
    if b"-----BEGIN" in raw or raw.startswith(b"ssh-"):
        errors.add(path, "holds a PEM or SSH key; HS* algorithms need a shared secret")
        return None
    short = [a for a in algorithms if len(raw) < _HMAC_MIN[a]]
    if short:
        errors.add(
            path,
            f"the secret is {len(raw)} bytes; {short[-1]} needs at least"
            f" {_HMAC_MIN[short[-1]]} (RFC 7518 §3.2)",
        )
        return None
    return JwtKey(None, raw, algorithms)


def _pem_public_key(raw: bytes, path: str, errors: ErrorList) -> Any:
    try:
        return load_pem_public_key(raw)
    except (ValueError, TypeError):
        pass
    try:
        return x509.load_pem_x509_certificate(raw).public_key()
    except (ValueError, TypeError):
        pass
    try:
        load_pem_private_key(raw, password=None)
    except (ValueError, TypeError):
        errors.add(path, "is not a PEM public key or certificate")
    else:
        errors.add(
            path,
            "holds a private key; give the proxy only the public key"
            " (openssl pkey -in KEY -pubout)",
        )
    return None


def _public_key(
    raw: bytes, algorithms: Tuple[str, ...], path: str, errors: ErrorList
) -> Optional[JwtKey]:
    key = _pem_public_key(raw, path, errors)
    if key is None:
        return None
    for alg in algorithms:
        if not _fits(alg, key):
            errors.add(path, f"holds {_describe(key)}; {alg} needs {_needs(alg)}")
            return None
    return JwtKey(None, key, algorithms)


def _jwks(
    raw: bytes, algorithms: Tuple[str, ...], path: str, errors: ErrorList
) -> Optional[Tuple[JwtKey, ...]]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        errors.add(path, f"is not valid JSON: {e}")
        return None
    if isinstance(doc, dict) and "kty" in doc:
        doc = {"keys": [doc]}
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        errors.add(path, 'must be a JWK set: {"keys": [...]}')
        return None
    keys: List[JwtKey] = []
    kids: Dict[str, int] = {}
    ok = True
    for i, jwk_dict in enumerate(doc["keys"]):
        where = f"key [{i}]"
        if not isinstance(jwk_dict, dict):
            errors.add(path, f"{where} is not a JSON object")
            ok = False
            continue
        kid = jwk_dict.get("kid")
        if kid is not None:
            if not isinstance(kid, str):
                errors.add(path, f"{where}: kid must be a string")
                ok = False
                continue
            where = f"key [{i}] (kid {kid!r})"
        alg = jwk_dict.get("alg")
        if jwk_dict.get("use") == "enc" or (alg is not None and alg not in algorithms):
            continue  # not for verifying these tokens
        try:
            key = jwt.PyJWK(jwk_dict, alg).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as e:
            errors.add(path, f"{where}: cannot load: {e}")
            ok = False
            continue
        if not isinstance(key, (bytes, RSAPublicKey, EllipticCurvePublicKey,
                                Ed25519PublicKey, Ed448PublicKey)):
            errors.add(path, f"{where} holds a private key; a JWK set for the proxy needs only public keys")
            ok = False
            continue
        usable = tuple(a for a in algorithms if (alg is None or a == alg) and _fits(a, key))
        if not usable:
            wanted = alg or " or ".join(algorithms)
            errors.add(path, f"{where} holds {_describe(key)}, which cannot verify {wanted}")
            ok = False
            continue
        if kid is not None:
            if kid in kids:
                errors.add(path, f"{where}: kid {kid!r} is also key [{kids[kid]}]")
                ok = False
                continue
            kids[kid] = i
        keys.append(JwtKey(kid, key, usable))
    if not ok:
        return None
    if not keys:
        errors.add(path, f"has no key for {', '.join(algorithms)}")
        return None
    if len(keys) > 1 and any(k.kid is None for k in keys):
        errors.add(path, "with several keys, every key needs a kid")
        return None
    return tuple(keys)


def _strings(value: Any, path: str, errors: ErrorList) -> Optional[Tuple[str, ...]]:
    """
    A string or a non-empty list of strings, as a tuple.
    """
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    errors.add(path, f"must be a string or a non-empty list of strings, not {value!r}")
    return None


def _forward_claims(
    value: Any, path: str, errors: ErrorList
) -> Tuple[Tuple[str, bytes], ...]:
    if not isinstance(value, dict):
        errors.add(path, f'must be a table like {{ sub = "X-User" }}, not {type(value).__name__}')
        return ()
    pairs: List[Tuple[str, bytes]] = []
    seen: Dict[bytes, str] = {}
    for claim, header in value.items():
        item_path = f"{path}.{claim}"
        if not isinstance(header, str):
            errors.add(item_path, f"must be a header name, not {type(header).__name__}")
        elif not valid_header_name(header):
            errors.add(item_path, f"{header!r} is not a valid header name")
        elif header.lower().encode() in REQUEST_RESERVED | _AUTH_HEADERS:
            errors.add(item_path, f"{header} is managed by the proxy and cannot carry a claim")
        elif header.lower().encode() in seen:
            errors.add(
                item_path,
                f"{header} already carries the claim {seen[header.lower().encode()]!r}",
            )
        else:
            seen[header.lower().encode()] = claim
            pairs.append((claim, header.encode("ascii")))
    return tuple(pairs)


def parse(
    name: str, table: Mapping[str, Any], errors: ErrorList, base_dir: str
) -> Optional[JwtSpec]:
    """
    Validate a C{[filter.NAME]} table of type C{jwt} and load its keys;
    report problems to C{errors} under C{filter.NAME.key}.
    """
    prefix = f"filter.{name}"
    before = len(errors)
    for key in table:
        if key not in _KEYS and key != "type":
            errors.add(f"{prefix}.{key}", "unknown key")
    values: Dict[str, Any] = {}

    algorithms: Optional[Tuple[str, ...]] = None
    if "algorithms" not in table:
        errors.add(f"{prefix}.algorithms", "required key is missing")
    else:
        algorithms = _parse_algorithms(table["algorithms"], f"{prefix}.algorithms", errors)

    sources = [k for k in ("key_file", "jwks_file", "secret") if k in table]
    if not sources:
        errors.add(prefix, "needs one of key_file, jwks_file or secret")
    for extra in sources[1:]:
        errors.add(f"{prefix}.{extra}", f"only one of key_file, jwks_file, secret (also {sources[0]})")
    if len(sources) == 1 and algorithms is not None:
        source = sources[0]
        path = f"{prefix}.{source}"
        shared = ALGORITHMS[algorithms[0]] == "oct"
        keys: Optional[Tuple[JwtKey, ...]] = None
        one: Optional[JwtKey] = None
        if source == "secret":
            secret = table["secret"]
            if not shared:
                errors.add(path, "is only for HS256, HS384 and HS512 (use key_file or jwks_file)")
            elif not isinstance(secret, str):
                errors.add(path, f"must be a string, not {type(secret).__name__}")
            else:
                one = _secret(secret.encode("utf-8"), algorithms, path, errors)
        else:
            raw = _read(table[source], path, base_dir, errors)
            if raw is not None:
                if source == "jwks_file":
                    keys = _jwks(raw, algorithms, path, errors)
                    values["by_kid"] = True
                elif shared:
                    one = _secret(raw.rstrip(b"\r\n"), algorithms, path, errors)
                else:
                    one = _public_key(raw, algorithms, path, errors)
        if one is not None:
            keys = (one,)
        if keys is not None:
            values["keys"] = keys

    for key in ("audience", "issuer"):
        if key in table:
            values[key] = _strings(table[key], f"{prefix}.{key}", errors)
    if "leeway" in table:
        leeway = table["leeway"]
        path = f"{prefix}.leeway"
        if not isinstance(leeway, (int, float)) or isinstance(leeway, bool):
            errors.add(path, f"must be a number of seconds, not {type(leeway).__name__}")
        elif not 0 <= leeway < float("inf"):
            errors.add(path, f"must be zero or more seconds, not {leeway}")
        else:
            values["leeway"] = float(leeway)
    if "forward_claims" in table:
        values["forward_claims"] = _forward_claims(
            table["forward_claims"], f"{prefix}.forward_claims", errors
        )
    if "header" in table:
        header = table["header"]
        path = f"{prefix}.header"
        if not isinstance(header, str) or not valid_header_name(header):
            errors.add(path, f"{header!r} is not a valid header name")
        elif header.lower().encode() in REQUEST_RESERVED - _AUTH_HEADERS:
            errors.add(path, f"{header} cannot carry a token")
        else:
            values["header"] = header.lower().encode("ascii")
    if "realm" in table:
        realm = table["realm"]
        path = f"{prefix}.realm"
        if not isinstance(realm, str) or not _REALM.match(realm) or '"' in realm or "\\" in realm:
            errors.add(path, f"{realm!r} must be non-empty printable ASCII without '\"' or '\\'")
        else:
            values["realm"] = realm
    if len(errors) > before or algorithms is None or "keys" not in values:
        return None
    claims_headers = {h.lower() for _, h in values.get("forward_claims", ())}
    token_header = values.get("header")
    if token_header is not None and token_header in claims_headers:
        errors.add(f"{prefix}.header", "is also a forward_claims header (it would be removed)")
        return None
    return JwtSpec(algorithms=algorithms, **values)


# --- the live filter -------------------------------------------------------


class _Invalid(Exception):
    """
    The token is refused; the message is the C{error_description}.
    """


@attrs.frozen
class _Verified:
    """
    A token whose signature, audience and issuer were verified: what the
    time checks and the request need of it.
    """

    claims: Dict[str, Any]
    exp: Optional[float]
    nbf: Optional[float]
    iat: Optional[float]
    forward: Tuple[Tuple[bytes, bytes], ...]


def _number(payload: Mapping[str, Any], claim: str) -> Optional[float]:
    value = payload.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"the {claim} claim must be a number")
    return float(value)


def _claim_value(value: Any) -> str:
    """
    A claim as header text: strings as they are, anything else as compact
    JSON.
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _description(e: jwt.PyJWTError, audience: Any) -> str:
    if isinstance(e, jwt.InvalidSignatureError):
        return "the signature does not verify"
    if isinstance(e, jwt.MissingRequiredClaimError):
        return f"the token has no {e.claim} claim"
    if isinstance(e, jwt.InvalidAudienceError):
        if audience is None:
            return "the token is for an audience (aud) and none is accepted here"
        return "the token is for another audience"
    if isinstance(e, jwt.InvalidIssuerError):
        return "the token is from another issuer"
    if isinstance(e, jwt.InvalidAlgorithmError):
        return "the algorithm is not accepted"
    if isinstance(e, _STRING_CLAIM_ERRORS):
        return "the sub and jti claims must be strings"
    return "the token is malformed"


def _one_or_list(values: Optional[Tuple[str, ...]]) -> Any:
    if values is None or len(values) > 1:
        return None if values is None else list(values)
    return values[0]


@implementer(IRequestFilter)
class JwtFilter:
    """
    The live C{jwt} filter; see the module docstring.

    @ivar name: the filter's name.
    @ivar spec: its L{JwtSpec}.
    """

    def __init__(self, name: str, spec: JwtSpec, clock: IReactorTime) -> None:
        self.name = name
        self.spec = spec
        self._clock = clock
        self._algorithms = frozenset(spec.algorithms)
        self._keys: Dict[Optional[str], JwtKey] = {k.kid: k for k in spec.keys}
        self._single: Optional[JwtKey] = spec.keys[0] if len(spec.keys) == 1 else None
        # a string, or a list (what PyJWT accepts for several, since 2.9)
        self._audience: Any = _one_or_list(spec.audience)
        self._issuer: Any = _one_or_list(spec.issuer)
        self._leeway = spec.leeway
        self._strip: FrozenSet[bytes] = frozenset(h.lower() for _, h in spec.forward_claims)
        self._cache: LRU[bytes, _Verified] = LRU(CACHE_SIZE)
        self._realm = b'Bearer realm="' + spec.realm.encode("ascii") + b'"'

    def __repr__(self) -> str:
        return f"<JwtFilter {self.name!r}>"

    def _refuse(self, forward: bool, error: Optional[str], description: str) -> Deny:
        challenge = self._realm
        if error is not None:
            safe = re.sub(r'[^\x20-\x7e]|["\\]', "'", description)
            challenge += (
                b', error="' + error.encode("ascii") + b'", error_description="'
                + safe.encode("ascii") + b'"'
            )
        status = 400 if error == "invalid_request" else 407 if forward else 401
        name = b"Proxy-Authenticate" if forward else b"WWW-Authenticate"
        return Deny(status, self.name, description, ((name, challenge),))

    def filter_request(self, info: RequestInfo) -> Optional[Deny]:
        """
        Let the request pass with a valid token (adding its claims to
        C{info.claims} and the C{forward_claims} headers); otherwise answer
        400, 401 or 407 as RFC 6750 says. Client-sent C{forward_claims}
        headers are removed in every case.
        """
        headers = info.headers
        if self._strip:
            remove_headers(headers, self._strip)
        forward = info.kind == "forward"
        lname = self.spec.header
        if lname is None:
            lname = b"proxy-authorization" if forward else b"authorization"
        found: Optional[bytes] = None
        for name, value in headers:
            if name.lower() == lname:
                if found is not None:
                    return self._refuse(forward, "invalid_request", "several tokens were sent")
                found = value
        if found is None:
            return self._refuse(forward, None, "a bearer token is required")
        scheme, space, rest = found.strip().partition(b" ")
        if space and scheme.lower() == b"bearer":
            token = rest.strip()
        elif lname in _AUTH_HEADERS:
            return self._refuse(forward, None, "a bearer token is required")
        else:
            token = found.strip()
        if not token:
            return self._refuse(forward, "invalid_request", "the token is empty")
        verified = self._cache.get(token)
        try:
            if verified is None:
                verified = self._verify(token)
                if len(token) <= CACHE_MAX_TOKEN:
                    self._cache.put(token, verified)
            self._check_times(verified)
        except _Invalid as e:
            return self._refuse(forward, "invalid_token", str(e))
        info.claims.update(verified.claims)
        if verified.forward:
            headers.extend(verified.forward)
        return None

    def _check_times(self, verified: _Verified) -> None:
        now = self._clock.seconds()
        leeway = self._leeway
        if verified.exp is not None and now >= verified.exp + leeway:
            raise _Invalid("the token expired")
        if verified.nbf is not None and verified.nbf > now + leeway:
            raise _Invalid("the token is not valid yet (nbf)")
        if verified.iat is not None and verified.iat > now + leeway:
            raise _Invalid("the token was issued in the future (iat)")

    def _verify(self, token: bytes) -> _Verified:
        """
        Check the token's algorithm, signature, audience and issuer.

        @raise _Invalid: saying why it is refused.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _Invalid("the token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            shown = alg if isinstance(alg, str) and len(alg) <= 20 else "?"
            raise _Invalid(f"the algorithm {shown} is not accepted")
        key = self._choose_key(header.get("kid"))
        if alg not in key.algorithms:
            raise _Invalid(f"the algorithm {alg} does not fit the key")
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                options=_DECODE_OPTIONS,
            )
        except jwt.PyJWTError as e:
            raise _Invalid(_description(e, self._audience)) from None
        exp = _number(payload, "exp")
        nbf = _number(payload, "nbf")
        iat = _number(payload, "iat")
        forward = []
        for claim, header_name in self.spec.forward_claims:
            if claim in payload:
                value = _claim_value(payload[claim]).encode("utf-8")
                if _CTL_BYTES.search(value):
                    raise _Invalid(f"the {claim} claim cannot be sent as a header")
                forward.append((header_name, value))
        return _Verified(payload, exp, nbf, iat, tuple(forward))

    def _choose_key(self, kid: Any) -> JwtKey:
        single = self._single
        if single is not None and (kid is None or single.kid is None or not self.spec.by_kid):
            return single
        if kid is None:
            raise _Invalid("the token has no kid and there are several keys")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _Invalid("the token's kid names no known key")
        return key


def build(name: str, spec: JwtSpec, clock: IReactorTime) -> JwtFilter:
    """
    Make the live filter for C{spec}; C{clock} judges C{exp}, C{nbf} and
    C{iat}.
    """
    return JwtFilter(name, spec, clock)
