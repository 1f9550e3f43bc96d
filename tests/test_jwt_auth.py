"""
Tests for L{twisted_proxy.filters.jwt_auth}, the C{jwt} filter type.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.filters import jwt_auth
from twisted_proxy.filters.jwt_auth import JwtFilter, JwtSpec, build, parse
from twisted_proxy.filters.registry import filter_type
from twisted_proxy.interfaces import IRequestFilter
from twisted_proxy.testing import request_info, run_filter

NOW = 1_700_000_000.0
SECRET = "s" * 32
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def public_pem(private: Any) -> bytes:
    return private.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private: Any) -> bytes:
    return private.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(private: Any) -> bytes:
    import datetime

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def jwk(private: Any, kid: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """
    The public JWK of C{private}.
    """
    if isinstance(private, rsa.RSAPrivateKey):
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    else:
        data = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    if kid is not None:
        data["kid"] = kid
    data.update(extra)
    return data  # type: ignore[no-any-return]


def token(
    claims: Optional[Dict[str, Any]] = None,
    key: Any = SECRET,
    algorithm: str = "HS256",
    **headers: Any,
) -> str:
    payload = {"sub": "alice", "exp": NOW + 3600}
    payload.update(claims or {})
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers or None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: Dict[str, Any], payload: Dict[str, Any], secret: bytes) -> str:
    """
    A token signed with HMAC-SHA256 over whatever header is given: how an
    attacker makes one (PyJWT refuses to sign with a PEM as the secret).
    """
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def bearer(value: str, name: bytes = b"Authorization") -> List[Tuple[bytes, bytes]]:
    return [(name, b"Bearer " + value.encode())]


def info(headers: List[Tuple[bytes, bytes]], kind: str = "reverse") -> RequestInfo:
    """
    A request on a listener of C{kind} whose C{headers} is the very list
    given.
    """
    request = request_info()
    request.headers = headers
    request.kind = kind
    return request


class _Base(SynchronousTestCase):
    def folder(self, files: Dict[str, bytes]) -> str:
        folder = self.mktemp()
        os.makedirs(folder)
        for name, content in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(content)
        return folder

    def parsed(
        self, table: Dict[str, Any], files: Optional[Dict[str, bytes]] = None, name: str = "jwt"
    ) -> Tuple[Optional[JwtSpec], List[Tuple[str, str]]]:
        errors = ErrorList()
        spec = parse(name, table, errors, self.folder(files or {}))
        return spec, errors.items

    def make(
        self, table: Dict[str, Any], files: Optional[Dict[str, bytes]] = None
    ) -> Tuple[JwtFilter, task.Clock]:
        spec, errors = self.parsed(table, files)
        assert spec is not None and not errors, errors
        clock = task.Clock()
        clock.advance(NOW)
        return build("jwt", spec, clock), clock

    def hs256(self, **table: Any) -> JwtFilter:
        return self.make({"algorithms": ["HS256"], "secret": SECRET, **table})[0]

    def rs256(self, **table: Any) -> JwtFilter:
        return self.make(
            {"algorithms": ["RS256"], "key_file": "public.pem", **table},
            {"public.pem": public_pem(RSA_KEY)},
        )[0]

    def refused(
        self, flt: JwtFilter, request: RequestInfo, status: int = 401
    ) -> Tuple[str, bytes]:
        """
        Run C{flt}; assert it refused with C{status}; return the message
        and the challenge.
        """
        verdict = run_filter(flt, request)
        assert verdict is not None, "not refused"
        self.assertEqual(verdict.status, status)
        self.assertEqual(verdict.rule, "jwt")
        self.assertEqual(len(verdict.headers), 1)
        return verdict.message, verdict.headers[0][1]

    def invalid(self, flt: JwtFilter, value: str, description: str) -> None:
        """
        Assert that the token C{value} is refused as C{invalid_token}
        with C{description}.
        """
        message, challenge = self.refused(flt, info(bearer(value)))
        self.assertEqual(message, description)
        self.assertEqual(
            challenge,
            b'Bearer realm="twisted-proxy", error="invalid_token", error_description="'
            + description.encode()
            + b'"',
        )


class ParseTests(_Base):
    """
    L{parse} checks the table and loads the key material.
    """

    def test_registered(self) -> None:
        """
        C{jwt} is a built-in filter type, implemented by C{jwt_auth}.
        """
        self.assertIs(filter_type("jwt"), jwt_auth)

    def test_secret(self) -> None:
        """
        An inline HS256 secret; defaults for the rest.
        """
        spec, errors = self.parsed({"algorithms": ["HS256"], "secret": SECRET})
        self.assertEqual(errors, [])
        assert spec is not None
        self.assertEqual(spec.algorithms, ("HS256",))
        self.assertEqual([(k.kid, k.key, k.algorithms) for k in spec.keys], [(None, SECRET.encode(), ("HS256",))])
        self.assertEqual(
            (spec.audience, spec.issuer, spec.leeway, spec.forward_claims, spec.header, spec.realm),
            (None, None, 0.0, (), None, "twisted-proxy"),
        )

    def test_all_keys(self) -> None:
        """
        Every optional key is parsed.
        """
        spec, errors = self.parsed(
            {
                "algorithms": ["RS256", "PS256", "RS256"],
                "key_file": "k.pem",
                "audience": ["api", "web"],
                "issuer": "https://issuer/",
                "leeway": 30,
                "forward_claims": {"sub": "X-User", "roles": "X-Roles"},
                "header": "X-Token",
                "realm": "api",
            },
            {"k.pem": public_pem(RSA_KEY)},
        )
        self.assertEqual(errors, [])
        assert spec is not None
        self.assertEqual(spec.algorithms, ("RS256", "PS256"))
        self.assertEqual(spec.audience, ("api", "web"))
        self.assertEqual(spec.issuer, ("https://issuer/",))
        self.assertEqual(spec.leeway, 30.0)
        self.assertEqual(spec.forward_claims, (("sub", b"X-User"), ("roles", b"X-Roles")))
        self.assertEqual(spec.header, b"x-token")
        self.assertEqual(spec.realm, "api")
        self.assertEqual(spec.keys[0].key, RSA_KEY.public_key())

    def test_unknown_key(self) -> None:
        """
        Unknown keys are reported at their path.
        """
        _, errors = self.parsed({"algorithms": ["HS256"], "secret": SECRET, "audiences": "x"})
        self.assertEqual(errors, [("filter.jwt.audiences", "unknown key")])

    def test_algorithms(self) -> None:
        """
        C{algorithms} is required, a non-empty list of known names; C{none}
        is refused outright.
        """
        _, errors = self.parsed({"secret": SECRET})
        self.assertEqual(errors, [("filter.jwt.algorithms", "required key is missing")])
        for value in [[], "HS256"]:
            _, errors = self.parsed({"algorithms": value, "secret": SECRET})
            self.assertEqual(
                errors, [("filter.jwt.algorithms", f'must be a non-empty list like ["RS256"], not {value!r}')]
            )
        _, errors = self.parsed({"algorithms": ["HS256", "none", "XS1", 5], "secret": SECRET})
        self.assertEqual(
            [e[0] for e in errors],
            ["filter.jwt.algorithms[1]", "filter.jwt.algorithms[2]", "filter.jwt.algorithms[3]"],
        )
        self.assertEqual(errors[0][1], "'none' (unsigned tokens) is never accepted")
        self.assertTrue(errors[1][1].startswith("unknown algorithm 'XS1' (known: HS256, HS384"))
        _, errors = self.parsed({"algorithms": ["None"], "secret": SECRET})
        self.assertEqual(errors, [("filter.jwt.algorithms[0]", "'none' (unsigned tokens) is never accepted")])

    def test_no_mixing(self) -> None:
        """
        HS* and public-key algorithms in one filter are refused: the mix is
        the algorithm confusion attack.
        """
        _, errors = self.parsed(
            {"algorithms": ["RS256", "HS256"], "key_file": "k.pem"}, {"k.pem": public_pem(RSA_KEY)}
        )
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0][0], "filter.jwt.algorithms")
        self.assertIn("cannot be mixed", errors[0][1])

    def test_key_sources(self) -> None:
        """
        Exactly one of C{key_file}, C{jwks_file} and C{secret}.
        """
        _, errors = self.parsed({"algorithms": ["HS256"]})
        self.assertEqual(errors, [("filter.jwt", "needs one of key_file, jwks_file or secret")])
        _, errors = self.parsed(
            {"algorithms": ["HS256"], "secret": SECRET, "key_file": "a", "jwks_file": "b"}
        )
        self.assertEqual(
            errors,
            [
                ("filter.jwt.jwks_file", "only one of key_file, jwks_file, secret (also key_file)"),
                ("filter.jwt.secret", "only one of key_file, jwks_file, secret (also key_file)"),
            ],
        )

    def test_secret_problems(self) -> None:
        """
        C{secret} is for HS* only, a string, at least as long as the hash.
        """
        _, errors = self.parsed({"algorithms": ["RS256"], "secret": SECRET})
        self.assertEqual(
            errors,
            [("filter.jwt.secret", "is only for HS256, HS384 and HS512 (use key_file or jwks_file)")],
        )
        _, errors = self.parsed({"algorithms": ["HS256"], "secret": 12})
        self.assertEqual(errors, [("filter.jwt.secret", "must be a string, not int")])
        _, errors = self.parsed({"algorithms": ["HS256", "HS512"], "secret": "x" * 40})
        self.assertEqual(
            errors,
            [("filter.jwt.secret", "the secret is 40 bytes; HS512 needs at least 64 (RFC 7518 §3.2)")],
        )

    def test_secret_file(self) -> None:
        """
        For HS* C{key_file} holds the secret; a trailing newline is not
        part of it; a PEM key there is refused.
        """
        spec, errors = self.parsed(
            {"algorithms": ["HS256"], "key_file": "secret"}, {"secret": SECRET.encode() + b"\n"}
        )
        self.assertEqual(errors, [])
        assert spec is not None
        self.assertEqual(spec.keys[0].key, SECRET.encode())
        _, errors = self.parsed(
            {"algorithms": ["HS256"], "key_file": "k.pem"}, {"k.pem": public_pem(RSA_KEY)}
        )
        self.assertEqual(
            errors, [("filter.jwt.key_file", "holds a PEM or SSH key; HS* algorithms need a shared secret")]
        )

    def test_key_file_kinds(self) -> None:
        """
        C{key_file} may hold a public key or a certificate; a private key,
        garbage and a missing file are errors.
        """
        spec, errors = self.parsed(
            {"algorithms": ["ES256"], "key_file": "c.pem"}, {"c.pem": certificate_pem(EC_KEY)}
        )
        self.assertEqual(errors, [])
        assert spec is not None
        self.assertEqual(spec.keys[0].key, EC_KEY.public_key())
        _, errors = self.parsed(
            {"algorithms": ["RS256"], "key_file": "k.pem"}, {"k.pem": private_pem(RSA_KEY)}
        )
        self.assertEqual(
            errors,
            [
                (
                    "filter.jwt.key_file",
                    "holds a private key; give the proxy only the public key"
                    " (openssl pkey -in KEY -pubout)",
                )
            ],
        )
        _, errors = self.parsed({"algorithms": ["RS256"], "key_file": "k.pem"}, {"k.pem": b"hello"})
        self.assertEqual(errors, [("filter.jwt.key_file", "is not a PEM public key or certificate")])
        _, errors = self.parsed({"algorithms": ["RS256"], "key_file": "missing.pem"})
        self.assertEqual([e[0] for e in errors], ["filter.jwt.key_file"])
        self.assertIn("cannot read", errors[0][1])

    def test_key_must_fit(self) -> None:
        """
        The key must fit every algorithm: the right type, curve and size.
        """
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        for algorithms, key, message in [
            (["RS256"], EC_KEY, "holds an EC key on P-256; RS256 needs an RSA key of at least 2048 bits"),
            (["ES384"], EC_KEY, "holds an EC key on P-256; ES384 needs an EC key on P-384"),
            (["RS256"], small, "holds an RSA key (1024 bits); RS256 needs an RSA key of at least 2048 bits"),
            (["RS256", "ES256"], RSA_KEY, "holds an RSA key (2048 bits); ES256 needs an EC key on P-256"),
            (["EdDSA"], RSA_KEY, "holds an RSA key (2048 bits); EdDSA needs an Ed25519 or Ed448 key"),
        ]:
            _, errors = self.parsed(
                {"algorithms": algorithms, "key_file": "k.pem"}, {"k.pem": public_pem(key)}
            )
            self.assertEqual(errors, [("filter.jwt.key_file", message)])

    def test_jwks(self) -> None:
        """
        A JWK set gives one key per entry with its kid; encryption keys
        and keys for other algorithms are skipped.
        """
        doc = {
            "keys": [
                jwk(RSA_KEY, "a"),
                jwk(RSA_KEY_2, "b", alg="RS256", use="sig"),
                jwk(RSA_KEY_2, "enc", use="enc"),
                jwk(EC_KEY, "ec", alg="ES256"),
            ]
        }
        spec, errors = self.parsed(
            {"algorithms": ["RS256", "PS256"], "jwks_file": "jwks.json"},
            {"jwks.json": json.dumps(doc).encode()},
        )
        self.assertEqual(errors, [])
        assert spec is not None
        self.assertTrue(spec.by_kid)
        self.assertEqual(
            [(k.kid, k.algorithms) for k in spec.keys],
            [("a", ("RS256", "PS256")), ("b", ("RS256",))],
        )

    def test_jwks_problems(self) -> None:
        """
        A JWK set that is not JSON, not a set, holds a private key, repeats
        a kid, lacks kids with several keys or has no usable key is an
        error.
        """
        private = jwk(RSA_KEY, "p")
        private.update(json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY)))
        for content, message in [
            (b"{", "is not valid JSON"),
            (b"[]", 'must be a JWK set: {"keys": [...]}'),
            (json.dumps({"keys": [private]}).encode(), "key [0] (kid 'p') holds a private key"),
            (json.dumps({"keys": [jwk(RSA_KEY, "a"), jwk(RSA_KEY_2, "a")]}).encode(),
             "key [1] (kid 'a'): kid 'a' is also key [0]"),
            (json.dumps({"keys": [jwk(RSA_KEY), jwk(RSA_KEY_2, "b")]}).encode(),
             "with several keys, every key needs a kid"),
            (json.dumps({"keys": [jwk(EC_KEY, "e")]}).encode(),
             "key [0] (kid 'e') holds an EC key on P-256, which cannot verify RS256"),
            (json.dumps({"keys": [jwk(RSA_KEY, "x", use="enc")]}).encode(), "has no key for RS256"),
            (json.dumps({"keys": [{"kty": "RSA", "kid": "z"}]}).encode(), "key [0] (kid 'z'): cannot load"),
        ]:
            _, errors = self.parsed(
                {"algorithms": ["RS256"], "jwks_file": "jwks.json"}, {"jwks.json": content}
            )
            self.assertEqual([e[0] for e in errors], ["filter.jwt.jwks_file"], content)
            self.assertTrue(errors[0][1].startswith(message), errors[0][1])

    def test_jwks_single_key(self) -> None:
        """
        A single JWK (not in a set) and an HMAC key in a set are fine.
        """
        spec, errors = self.parsed(
            {"algorithms": ["EdDSA"], "jwks_file": "k.json"}, {"k.json": json.dumps(jwk(ED_KEY)).encode()}
        )
        self.assertEqual(errors, [])
        oct_key = {"kty": "oct", "kid": "h", "k": b64(SECRET.encode())}
        spec, errors = self.parsed(
            {"algorithms": ["HS256"], "jwks_file": "k.json"}, {"k.json": json.dumps({"keys": [oct_key]}).encode()}
        )
        self.assertEqual(errors, [])
        assert spec is not None
        self.assertEqual(spec.keys[0].key, SECRET.encode())

    def test_audience_issuer_leeway(self) -> None:
        """
        C{audience} and C{issuer} are strings or lists of strings;
        C{leeway} is a number of seconds, zero or more.
        """
        base = {"algorithms": ["HS256"], "secret": SECRET}
        _, errors = self.parsed({**base, "audience": [], "issuer": 3, "leeway": -1})
        self.assertEqual(
            errors,
            [
                ("filter.jwt.audience", "must be a string or a non-empty list of strings, not []"),
                ("filter.jwt.issuer", "must be a string or a non-empty list of strings, not 3"),
                ("filter.jwt.leeway", "must be zero or more seconds, not -1"),
            ],
        )
        _, errors = self.parsed({**base, "leeway": "30s"})
        self.assertEqual(errors, [("filter.jwt.leeway", "must be a number of seconds, not str")])
        spec, errors = self.parsed({**base, "leeway": 1.5})
        assert spec is not None
        self.assertEqual(spec.leeway, 1.5)

    def test_forward_claims_problems(self) -> None:
        """
        C{forward_claims} maps claims to valid header names the proxy does
        not own, each header at most once.
        """
        base = {"algorithms": ["HS256"], "secret": SECRET}
        _, errors = self.parsed({**base, "forward_claims": ["sub"]})
        self.assertEqual(
            errors, [("filter.jwt.forward_claims", 'must be a table like { sub = "X-User" }, not list')]
        )
        _, errors = self.parsed(
            {
                **base,
                "forward_claims": {
                    "a": "X User",
                    "b": "Content-Length",
                    "c": "authorization",
                    "d": "X-Who",
                    "e": "x-who",
                    "f": 1,
                },
            }
        )
        self.assertEqual(
            errors,
            [
                ("filter.jwt.forward_claims.a", "'X User' is not a valid header name"),
                ("filter.jwt.forward_claims.b", "Content-Length is managed by the proxy and cannot carry a claim"),
                ("filter.jwt.forward_claims.c", "authorization is managed by the proxy and cannot carry a claim"),
                ("filter.jwt.forward_claims.e", "x-who already carries the claim 'd'"),
                ("filter.jwt.forward_claims.f", "must be a header name, not int"),
            ],
        )

    def test_header_and_realm_problems(self) -> None:
        """
        C{header} is a valid header name that can carry a token and is not
        a claim header; C{realm} is printable ASCII without quotes.
        """
        base = {"algorithms": ["HS256"], "secret": SECRET}
        _, errors = self.parsed({**base, "header": "X Token", "realm": 'a"b'})
        self.assertEqual(
            errors,
            [
                ("filter.jwt.header", "'X Token' is not a valid header name"),
                ("filter.jwt.realm", "'a\"b' must be non-empty printable ASCII without '\"' or '\\'"),
            ],
        )
        _, errors = self.parsed({**base, "header": "Host"})
        self.assertEqual(errors, [("filter.jwt.header", "Host cannot carry a token")])
        _, errors = self.parsed({**base, "header": "X-User", "forward_claims": {"sub": "x-user"}})
        self.assertEqual(
            errors, [("filter.jwt.header", "is also a forward_claims header (it would be removed)")]
        )


class VerdictTests(_Base):
    """
    The filter passes requests with a valid token and answers others as
    RFC 6750 says.
    """

    def test_interface(self) -> None:
        """
        The filter is an C{IRequestFilter} named after its table.
        """
        flt = self.hs256()
        self.assertTrue(verifyObject(IRequestFilter, flt))
        self.assertEqual(flt.name, "jwt")

    def test_hs256(self) -> None:
        """
        A valid HS256 token passes; its claims join the request's; the
        token header is passed on.
        """
        headers = bearer(token({"scope": "read"}))
        request = info(headers)
        request.claims["earlier"] = True
        self.assertIsNone(run_filter(self.hs256(), request))
        self.assertEqual(
            request.claims, {"earlier": True, "sub": "alice", "exp": NOW + 3600, "scope": "read"}
        )
        self.assertEqual(len(headers), 1)

    def test_rs256(self) -> None:
        """
        A valid RS256 token passes with a PEM public key.
        """
        request = info(bearer(token(key=RSA_KEY, algorithm="RS256")))
        self.assertIsNone(run_filter(self.rs256(), request))
        self.assertEqual(request.claims["sub"], "alice")

    def test_es256_and_eddsa(self) -> None:
        """
        ES256 and EdDSA tokens pass with their public keys.
        """
        for alg, key in [("ES256", EC_KEY), ("EdDSA", ED_KEY), ("PS256", RSA_KEY)]:
            flt, _ = self.make({"algorithms": [alg], "key_file": "k.pem"}, {"k.pem": public_pem(key)})
            self.assertIsNone(run_filter(flt, info(bearer(token(key=key, algorithm=alg)))), alg)

    def test_missing(self) -> None:
        """
        Without a token: 401 with a bare C{Bearer} challenge (no error
        code, RFC 6750 §3.1). Another scheme counts as no token.
        """
        flt = self.hs256(realm="api")
        for headers in [[], [(b"Authorization", b"Basic YTpi")], [(b"Authorization", b"Bearer")]]:
            verdict = run_filter(flt, info(headers))
            self.assertEqual(
                verdict,
                Deny(401, "jwt", "a bearer token is required", ((b"WWW-Authenticate", b'Bearer realm="api"'),)),
            )

    def test_invalid_request(self) -> None:
        """
        Two tokens are a malformed request: 400 with C{invalid_request}.
        """
        flt = self.hs256()
        good = bearer(token())[0]
        message, challenge = self.refused(flt, info([good, good]), 400)
        self.assertEqual(message, "several tokens were sent")
        self.assertEqual(
            challenge,
            b'Bearer realm="twisted-proxy", error="invalid_request",'
            b' error_description="several tokens were sent"',
        )

    def test_forward_listener(self) -> None:
        """
        On a forward listener the token is in C{Proxy-Authorization} and a
        refusal is 407 with C{Proxy-Authenticate}.
        """
        flt = self.hs256()
        self.assertIsNone(run_filter(flt, info(bearer(token(), b"Proxy-Authorization"), "forward")))
        verdict = run_filter(flt, info(bearer(token()), "forward"))
        self.assertEqual(
            verdict,
            Deny(407, "jwt", "a bearer token is required", ((b"Proxy-Authenticate", b'Bearer realm="twisted-proxy"'),)),
        )
        message, challenge = self.refused(
            flt, info(bearer("x.y.z", b"proxy-authorization"), "forward"), 407
        )
        self.assertEqual(message, "the token is malformed")

    def test_custom_header(self) -> None:
        """
        With C{header} set the token is read from it, with or without
        C{Bearer}.
        """
        flt = self.hs256(header="X-Token")
        self.assertIsNone(run_filter(flt, info([(b"x-token", token().encode())])))
        self.assertIsNone(run_filter(flt, info([(b"X-Token", b"bearer " + token().encode())])))
        message, _ = self.refused(flt, info(bearer(token())))
        self.assertEqual(message, "a bearer token is required")

    def test_malformed(self) -> None:
        """
        Something that is not a JWT is an invalid token.
        """
        flt = self.hs256()
        signing_input = b64(b'{"alg":"HS256"}') + "." + b64(b"not json")
        signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        not_json = signing_input + "." + b64(signature)
        for value in ["abc", "a.b.c", "a.b.c.d.e", not_json]:
            self.invalid(flt, value, "the token is malformed")

    def test_bad_signature(self) -> None:
        """
        A token signed with another key is refused.
        """
        self.invalid(self.hs256(), token(key="t" * 32), "the signature does not verify")
        self.invalid(self.rs256(), token(key=RSA_KEY_2, algorithm="RS256"), "the signature does not verify")
        self.invalid(self.rs256(), token(key=RSA_KEY, algorithm="RS256")[:-4] + "AAAA", "the signature does not verify")

    def test_algorithm_confusion(self) -> None:
        """
        A token signed with HS256 using the RSA public key as the HMAC
        secret (the classic confusion attack) is refused.
        """
        forged = hand_made(
            {"alg": "HS256", "typ": "JWT"}, {"sub": "admin", "exp": NOW + 60}, public_pem(RSA_KEY)
        )
        self.invalid(self.rs256(), forged, "the algorithm HS256 is not accepted")

    def test_alg_none(self) -> None:
        """
        An unsigned token (C{alg: none}) is refused.
        """
        unsigned = b64(b'{"alg":"none"}') + "." + b64(b'{"sub":"admin"}') + "."
        self.invalid(self.hs256(), unsigned, "the algorithm none is not accepted")

    def test_algorithm_not_listed(self) -> None:
        """
        A token signed with an algorithm the key could verify but that is
        not in C{algorithms} is refused.
        """
        self.invalid(
            self.rs256(), token(key=RSA_KEY, algorithm="RS512"), "the algorithm RS512 is not accepted"
        )

    def test_description_is_safe(self) -> None:
        """
        What the token says never breaks the challenge header: quotes are
        replaced and long values elided.
        """
        flt = self.hs256()
        quoted = hand_made({"alg": 'H"S'}, {}, SECRET.encode())
        message, challenge = self.refused(flt, info(bearer(quoted)))
        self.assertEqual(message, 'the algorithm H"S is not accepted')
        self.assertIn(b"error_description=\"the algorithm H'S is not accepted\"", challenge)
        long_alg = hand_made({"alg": "X" * 500}, {}, SECRET.encode())
        self.invalid(flt, long_alg, "the algorithm ? is not accepted")


class TimeTests(_Base):
    """
    C{exp}, C{nbf} and C{iat} are judged by the filter's clock, with
    C{leeway}.
    """

    def test_expired(self) -> None:
        """
        A token is refused from its C{exp} on.
        """
        flt, clock = self.make({"algorithms": ["HS256"], "secret": SECRET})
        value = token({"exp": NOW + 10})
        self.assertIsNone(run_filter(flt, info(bearer(value))))
        clock.advance(9.5)
        self.assertIsNone(run_filter(flt, info(bearer(value))))
        clock.advance(0.5)
        self.invalid(flt, value, "the token expired")

    def test_expired_leeway(self) -> None:
        """
        With C{leeway} an expired token passes for that many more seconds.
        """
        flt, clock = self.make({"algorithms": ["HS256"], "secret": SECRET, "leeway": 30})
        value = token({"exp": NOW - 20})
        self.assertIsNone(run_filter(flt, info(bearer(value))))
        clock.advance(9.9)
        self.assertIsNone(run_filter(flt, info(bearer(value))))
        clock.advance(0.1)
        self.invalid(flt, value, "the token expired")

    def test_not_before(self) -> None:
        """
        A token is refused before its C{nbf} (less C{leeway}), and passes
        once the clock gets there.
        """
        flt, clock = self.make({"algorithms": ["HS256"], "secret": SECRET, "leeway": 5})
        value = token({"nbf": NOW + 60})
        self.invalid(flt, value, "the token is not valid yet (nbf)")
        clock.advance(55)
        self.assertIsNone(run_filter(flt, info(bearer(value))))

    def test_issued_in_future(self) -> None:
        """
        A token issued after now (beyond C{leeway}) is refused.
        """
        flt, clock = self.make({"algorithms": ["HS256"], "secret": SECRET})
        value = token({"iat": NOW + 100})
        self.invalid(flt, value, "the token was issued in the future (iat)")
        clock.advance(100)
        self.assertIsNone(run_filter(flt, info(bearer(value))))

    def test_no_exp(self) -> None:
        """
        A token without C{exp} never expires (the issuer chose so).
        """
        flt, clock = self.make({"algorithms": ["HS256"], "secret": SECRET})
        clock.advance(10**9)
        self.assertIsNone(run_filter(flt, info(bearer(token({"exp": None})))))

    def test_times_must_be_numbers(self) -> None:
        """
        C{exp}, C{nbf} and C{iat} that are not numbers are refused.
        """
        flt = self.hs256()
        for claim in ("exp", "nbf", "iat"):
            self.invalid(flt, token({claim: "tomorrow"}), f"the {claim} claim must be a number")
        self.invalid(flt, token({"exp": True}), "the exp claim must be a number")


class AudienceIssuerTests(_Base):
    """
    PyJWT checks C{aud} and C{iss} against the configured values.
    """

    def test_audience(self) -> None:
        """
        The token's C{aud} (a string or a list) must name an accepted
        audience.
        """
        flt = self.hs256(audience=["api", "web"])
        self.assertIsNone(run_filter(flt, info(bearer(token({"aud": "web"})))))
        self.assertIsNone(run_filter(flt, info(bearer(token({"aud": ["x", "api"]})))))
        self.invalid(flt, token({"aud": "billing"}), "the token is for another audience")
        self.invalid(flt, token(), "the token has no aud claim")

    def test_audience_not_configured(self) -> None:
        """
        A token for a particular audience is refused when the filter
        accepts none (RFC 7519 §4.1.3).
        """
        self.invalid(
            self.hs256(), token({"aud": "api"}),
            "the token is for an audience (aud) and none is accepted here",
        )

    def test_issuer(self) -> None:
        """
        The token's C{iss} must be one of the configured issuers.
        """
        flt = self.hs256(issuer="https://login.example.com/")
        self.assertIsNone(run_filter(flt, info(bearer(token({"iss": "https://login.example.com/"})))))
        self.invalid(flt, token({"iss": "https://evil.example.com/"}), "the token is from another issuer")
        self.invalid(flt, token(), "the token has no iss claim")
        # a part of the issuer is not the issuer (CVE-2024-53861 in PyJWT 2.10.0)
        self.invalid(flt, token({"iss": "https://login"}), "the token is from another issuer")
        flt = self.hs256(issuer=["a", "b"])
        self.assertIsNone(run_filter(flt, info(bearer(token({"iss": "b"})))))


class JwksTests(_Base):
    """
    With a JWK set, the token's C{kid} picks the key.
    """

    def make_jwks(self, keys: List[Dict[str, Any]], algorithms: Tuple[str, ...] = ("RS256",)) -> JwtFilter:
        return self.make(
            {"algorithms": list(algorithms), "jwks_file": "jwks.json"},
            {"jwks.json": json.dumps({"keys": keys}).encode()},
        )[0]

    def test_kid_picks_key(self) -> None:
        """
        Tokens signed by either key pass when they name it.
        """
        flt = self.make_jwks([jwk(RSA_KEY, "one"), jwk(RSA_KEY_2, "two")])
        for key, kid in [(RSA_KEY, "one"), (RSA_KEY_2, "two")]:
            self.assertIsNone(run_filter(flt, info(bearer(token(key=key, algorithm="RS256", kid=kid)))))

    def test_wrong_kid(self) -> None:
        """
        A token naming the other key fails its signature check; an unknown
        kid or none at all (with several keys) is refused.
        """
        flt = self.make_jwks([jwk(RSA_KEY, "one"), jwk(RSA_KEY_2, "two")])
        self.invalid(flt, token(key=RSA_KEY, algorithm="RS256", kid="two"), "the signature does not verify")
        self.invalid(flt, token(key=RSA_KEY, algorithm="RS256", kid="three"), "the token's kid names no known key")
        self.invalid(
            flt, token(key=RSA_KEY, algorithm="RS256"), "the token has no kid and there are several keys"
        )

    def test_single_key(self) -> None:
        """
        With one key, a token without a kid uses it; a key without a kid
        verifies tokens whatever kid they name.
        """
        flt = self.make_jwks([jwk(RSA_KEY, "one")])
        self.assertIsNone(run_filter(flt, info(bearer(token(key=RSA_KEY, algorithm="RS256")))))
        self.invalid(flt, token(key=RSA_KEY, algorithm="RS256", kid="other"), "the token's kid names no known key")
        flt = self.make_jwks([jwk(RSA_KEY)])
        self.assertIsNone(run_filter(flt, info(bearer(token(key=RSA_KEY, algorithm="RS256", kid="x")))))

    def test_key_alg(self) -> None:
        """
        A key whose JWK names its C{alg} verifies only that algorithm.
        """
        flt = self.make_jwks([jwk(RSA_KEY, "one", alg="RS256")], ("RS256", "PS256"))
        self.invalid(
            flt, token(key=RSA_KEY, algorithm="PS256", kid="one"), "the algorithm PS256 does not fit the key"
        )

    def test_mixed_key_types(self) -> None:
        """
        An RSA and an EC key in one set each verify their own algorithm,
        and a token cannot make one key verify the other's algorithm.
        """
        flt = self.make_jwks([jwk(RSA_KEY, "r"), jwk(EC_KEY, "e")], ("RS256", "ES256"))
        self.assertIsNone(run_filter(flt, info(bearer(token(key=EC_KEY, algorithm="ES256", kid="e")))))
        self.assertIsNone(run_filter(flt, info(bearer(token(key=RSA_KEY, algorithm="RS256", kid="r")))))
        self.invalid(flt, token(key=EC_KEY, algorithm="ES256", kid="r"), "the algorithm ES256 does not fit the key")


class ForwardClaimsTests(_Base):
    """
    C{forward_claims} headers reach the backend; the client's own are
    always removed.
    """

    def test_forwarded(self) -> None:
        """
        Each present claim is sent in its header: strings as they are,
        anything else as compact JSON; absent claims send nothing.
        """
        flt = self.hs256(forward_claims={"sub": "X-User", "roles": "X-Roles", "admin": "X-Admin", "org": "X-Org"})
        headers = bearer(token({"roles": ["a", "b"], "admin": False, "name": "Zoë"}))
        self.assertIsNone(run_filter(flt, info(headers)))
        self.assertEqual(
            headers[1:],
            [(b"X-User", b"alice"), (b"X-Roles", b'["a","b"]'), (b"X-Admin", b"false")],
        )

    def test_spoofed_removed_when_valid(self) -> None:
        """
        Client-sent headers of those names, whatever their case, are
        replaced by the token's claims.
        """
        flt = self.hs256(forward_claims={"sub": "X-User"})
        headers = bearer(token()) + [(b"x-user", b"admin"), (b"X-USER", b"root")]
        self.assertIsNone(run_filter(flt, info(headers)))
        self.assertEqual(headers[1:], [(b"X-User", b"alice")])

    def test_spoofed_removed_when_refused(self) -> None:
        """
        Client-sent claim headers are removed also when the token is
        missing or invalid (the request is refused anyway).
        """
        flt = self.hs256(forward_claims={"sub": "X-User"})
        for headers in [[(b"X-User", b"admin")], bearer("bad") + [(b"X-User", b"admin")]]:
            self.assertIsNotNone(run_filter(flt, info(headers)))
            self.assertEqual([n for n, _ in headers if n.lower() == b"x-user"], [])

    def test_unsafe_claim(self) -> None:
        """
        A claim that would put a line break in a header is refused.
        """
        flt = self.hs256(forward_claims={"sub": "X-User"})
        self.invalid(flt, token({"sub": "alice\r\nX-Admin: 1"}), "the sub claim cannot be sent as a header")

    def test_utf8(self) -> None:
        """
        Non-ASCII claims are sent as UTF-8.
        """
        flt = self.hs256(forward_claims={"sub": "X-User"})
        headers = bearer(token({"sub": "zoë"}))
        run_filter(flt, info(headers))
        self.assertEqual(headers[1:], [(b"X-User", "zoë".encode())])


class CacheTests(_Base):
    """
    Verified tokens are remembered; the time checks still run each time.
    """

    def setUp(self) -> None:
        self.decodes = 0
        real = jwt_auth.jwt.decode

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.decodes += 1
            return real(*args, **kwargs)

        self.patch(jwt_auth.jwt, "decode", counting)

    def test_remembered(self) -> None:
        """
        The same token again is not verified again, and still gives its
        claims and headers to each request.
        """
        flt = self.hs256(forward_claims={"sub": "X-User"})
        value = token()
        for _ in range(3):
            headers = bearer(value) + [(b"X-User", b"spoof")]
            request = info(headers)
            self.assertIsNone(run_filter(flt, request))
            self.assertEqual(headers[1:], [(b"X-User", b"alice")])
            self.assertEqual(request.claims["sub"], "alice")
        self.assertEqual(self.decodes, 1)

    def test_expiry_still_checked(self) -> None:
        """
        A remembered token is refused once it expires.
        """
        flt, clock = self.make({"algorithms": ["HS256"], "secret": SECRET})
        value = token({"exp": NOW + 5})
        self.assertIsNone(run_filter(flt, info(bearer(value))))
        clock.advance(5)
        self.invalid(flt, value, "the token expired")
        self.assertEqual(self.decodes, 1)

    def test_failures_not_remembered(self) -> None:
        """
        A refused token is verified (and refused) each time.
        """
        flt = self.hs256()
        value = token(key="t" * 32)
        self.invalid(flt, value, "the signature does not verify")
        self.invalid(flt, value, "the signature does not verify")
        self.assertEqual(self.decodes, 2)

    def test_bounded(self) -> None:
        """
        Only the most recently used tokens are remembered.
        """
        self.patch(jwt_auth, "CACHE_SIZE", 2)
        flt = self.hs256()
        tokens = [token({"n": i}) for i in range(3)]
        for value in tokens:
            run_filter(flt, info(bearer(value)))
        run_filter(flt, info(bearer(tokens[2])))
        run_filter(flt, info(bearer(tokens[1])))
        self.assertEqual(self.decodes, 3)
        run_filter(flt, info(bearer(tokens[0])))
        self.assertEqual(self.decodes, 4)
